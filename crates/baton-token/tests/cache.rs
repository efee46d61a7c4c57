//! The verified-token cache never serves what `verify` would refuse: expired or not-yet-valid
//! tokens, tokens of a removed or replaced key, a kid-less token once the set has two keys,
//! another verifier's tokens, different (tampered) tokens. And it stays within its bounds.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use baton_token::{
    Algorithm, Claims, ErrorKind, Issuer, Key, KeyRing, KeySet, NoCustomClaims, TestClock,
    TokenCache, Verifier,
};
use serde::{Deserialize, Serialize};

const NOW: u64 = 1_800_000_000;

struct Setup {
    clock: TestClock,
    ring: KeyRing,
    issuer: Issuer,
    verifier: Verifier,
}

fn setup(alg: Algorithm, cache: TokenCache) -> Setup {
    let clock = TestClock::at_secs(NOW);
    let ring = KeyRing::new(KeySet::new(Key::generate("k1", alg).unwrap()).unwrap());
    let issuer = Issuer::new(ring.clone())
        .with_clock(clock.clone())
        .with_ttl(Duration::from_secs(60))
        .with_aud("api");
    let verifier = issuer
        .verifier()
        .with_leeway(Duration::ZERO)
        .with_cache(cache);
    Setup {
        clock,
        ring,
        issuer,
        verifier,
    }
}

fn token(s: &Setup, sub: &str) -> String {
    s.issuer
        .issue(sub, Some("s1"), NoCustomClaims {})
        .unwrap()
        .token
}

fn cached(v: &Verifier, token: &str) -> Result<Claims, ErrorKind> {
    v.verify_cached::<NoCustomClaims>(token)
        .map(Arc::unwrap_or_clone)
        .map_err(|e| e.kind())
}

fn cache(v: &Verifier) -> &TokenCache {
    v.cache().unwrap()
}

/// `token` with its ASCII character at `at` changed (to `A`, or `B` where it was `A`).
fn flip(token: &str, at: usize) -> String {
    let with = if &token[at..at + 1] == "A" { "B" } else { "A" };
    format!("{}{with}{}", &token[..at], &token[at + 1..])
}

#[test]
fn a_repeated_token_is_served_from_the_cache_with_the_same_claims() {
    let s = setup(Algorithm::ES256, TokenCache::new(64, 1 << 20));
    let t = token(&s, "alice");
    let first = cached(&s.verifier, &t).unwrap();
    assert_eq!(cache(&s.verifier).len(), 1);
    let again = cached(&s.verifier, &t).unwrap();
    assert_eq!(first, again);
    assert_eq!(again, s.verifier.verify::<NoCustomClaims>(&t).unwrap());
    assert_eq!(cache(&s.verifier).len(), 1, "a hit adds nothing");
    let other = token(&s, "bob");
    assert_eq!(cached(&s.verifier, &other).unwrap().sub, "bob");
    assert_eq!(cache(&s.verifier).len(), 2);
}

#[test]
fn a_hit_shares_the_cached_claims_instead_of_copying_them() {
    let s = setup(Algorithm::EdDSA, TokenCache::new(64, 1 << 20));
    let t = token(&s, "alice");
    let first = s.verifier.verify_cached::<NoCustomClaims>(&t).unwrap();
    let again = s.verifier.verify_cached::<NoCustomClaims>(&t).unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "the miss cached what it returned"
    );
    // Held by the cache and both callers.
    assert_eq!(Arc::strong_count(&first), 3);
    drop(again);
    assert_eq!(Arc::strong_count(&first), 2);
    cache(&s.verifier).clear();
    assert_eq!(
        Arc::strong_count(&first),
        1,
        "a caller keeps its claims past the entry"
    );
    assert_eq!(first.sub, "alice");
    let after = s.verifier.verify_cached::<NoCustomClaims>(&t).unwrap();
    assert!(!Arc::ptr_eq(&first, &after), "cleared: verified again");
    assert_eq!(*first, *after);
}

#[test]
fn an_expired_token_is_refused_and_evicted() {
    let s = setup(Algorithm::EdDSA, TokenCache::new(64, 1 << 20));
    let t = token(&s, "alice");
    cached(&s.verifier, &t).unwrap();
    let used = cache(&s.verifier).bytes();
    assert!(used > 0);
    s.clock.advance(Duration::from_secs(59));
    assert!(cached(&s.verifier, &t).is_ok());
    s.clock.advance(Duration::from_secs(1));
    assert_eq!(cached(&s.verifier, &t), Err(ErrorKind::Expired));
    assert_eq!(cache(&s.verifier).len(), 0, "evicted");
    assert_eq!(cache(&s.verifier).bytes(), 0);
    assert_eq!(cached(&s.verifier, &t), Err(ErrorKind::Expired));
}

#[test]
fn a_token_not_yet_valid_is_never_cached_and_its_nbf_is_checked_on_hits() {
    let s = setup(Algorithm::ES256, TokenCache::new(64, 1 << 20));
    let mut claims = Claims::new("alice", NOW + 60, NoCustomClaims {}).with_nbf(NOW + 10);
    claims.aud = Some("api".into());
    let t = s.issuer.sign(&claims).unwrap();
    assert_eq!(cached(&s.verifier, &t), Err(ErrorKind::NotYetValid));
    assert!(cache(&s.verifier).is_empty());
    s.clock.advance(Duration::from_secs(10));
    assert!(cached(&s.verifier, &t).is_ok());
    assert_eq!(cache(&s.verifier).len(), 1);
    // The same cached token, checked by a verifier whose clock runs behind: refused.
    s.clock.set_secs(NOW + 5);
    assert_eq!(cached(&s.verifier, &t), Err(ErrorKind::NotYetValid));
}

#[test]
fn a_removed_or_replaced_key_stops_its_cached_tokens() {
    let s = setup(Algorithm::ES256, TokenCache::new(64, 1 << 20));
    let t = token(&s, "alice");
    cached(&s.verifier, &t).unwrap();

    // Rotation keeps the old key: its cached tokens still pass.
    s.ring
        .update(|set| set.rotate_to(Key::generate("k2", Algorithm::ES256)?))
        .unwrap();
    assert!(cached(&s.verifier, &t).is_ok());

    // Removing it stops them at once, and their entries go.
    s.ring.update(|set| set.without("k1")).unwrap();
    assert_eq!(cached(&s.verifier, &t), Err(ErrorKind::UnknownKey));
    assert!(cache(&s.verifier).is_empty());
    assert_eq!(cache(&s.verifier).bytes(), 0);

    // A different key under the same kid is not the key that verified the token.
    s.ring
        .update(|set| set.with_key(Key::generate("k1", Algorithm::ES256)?))
        .unwrap();
    assert_eq!(cached(&s.verifier, &t), Err(ErrorKind::BadSignature));
}

#[test]
fn a_kid_less_token_stops_when_the_set_grows() {
    let s = setup(Algorithm::EdDSA, TokenCache::new(64, 1 << 20));
    let t = token(&s, "alice");
    // Strip the kid: re-sign a header without one.
    let set = s.ring.load();
    let pem = set.active().unwrap().private_pkcs8_pem().unwrap();
    let encoding = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
    let claims = s.verifier.verify::<NoCustomClaims>(&t).unwrap();
    let kid_less = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &encoding,
    )
    .unwrap();
    drop(set);
    assert!(cached(&s.verifier, &kid_less).is_ok());
    assert!(cached(&s.verifier, &kid_less).is_ok());
    s.ring
        .update(|set| set.with_key(Key::generate("k2", Algorithm::EdDSA)?))
        .unwrap();
    assert_eq!(
        s.verifier
            .verify::<NoCustomClaims>(&kid_less)
            .unwrap_err()
            .kind(),
        ErrorKind::UnknownKey
    );
    assert_eq!(cached(&s.verifier, &kid_less), Err(ErrorKind::UnknownKey));
}

#[test]
fn a_tampered_token_is_never_served_for_the_original() {
    let s = setup(Algorithm::ES256, TokenCache::new(64, 1 << 20));
    let t = token(&s, "alice");
    cached(&s.verifier, &t).unwrap();
    let mut tampered = t.clone();
    tampered.push('A');
    // (One more base64 character is one more signature byte: a bad signature.)
    assert_eq!(cached(&s.verifier, &tampered), Err(ErrorKind::BadSignature));
    // The signature's 11th character.
    let (head, _) = t.rsplit_once('.').unwrap();
    let flipped = flip(&t, head.len() + 1 + 10);
    assert_eq!(cached(&s.verifier, &flipped), Err(ErrorKind::BadSignature));
    assert_eq!(cache(&s.verifier).len(), 1);
}

#[test]
fn the_whole_token_decides_a_hit_not_its_place_in_the_cache() {
    // Two slots make one set: every token is looked for among the same two entries, so only
    // the comparison of whole tokens tells them apart.
    let s = setup(Algorithm::HS256, TokenCache::new(2, 1 << 20));
    let alice = token(&s, "alice");
    let bob = token(&s, "bobby");
    assert_eq!(cached(&s.verifier, &alice).unwrap().sub, "alice");
    assert_eq!(cached(&s.verifier, &bob).unwrap().sub, "bobby");
    assert_eq!(cache(&s.verifier).len(), 2);
    for _ in 0..3 {
        assert_eq!(cached(&s.verifier, &alice).unwrap().sub, "alice");
        assert_eq!(cached(&s.verifier, &bob).unwrap().sub, "bobby");
    }
    // Bob's header and claims under Alice's signature: the same length and the same last
    // bytes (which place a token), so only the comparison of the whole tokens refuses it.
    let (alice_head, alice_sig) = alice.rsplit_once('.').unwrap();
    let (bob_head, _) = bob.rsplit_once('.').unwrap();
    assert_eq!(alice_head.len(), bob_head.len());
    let forged = format!("{bob_head}.{alice_sig}");
    assert_eq!(forged.len(), alice.len());
    assert_eq!(forged[forged.len() - 32..], alice[alice.len() - 32..]);
    assert_eq!(cached(&s.verifier, &forged), Err(ErrorKind::BadSignature));
    // A prefix, an extension and a one-byte change of a cached token are other tokens.
    let prefix = &alice[..alice.len() - 1];
    assert!(cached(&s.verifier, prefix).is_err());
    assert!(cached(&s.verifier, &format!("{alice}A")).is_err());
    let flipped = flip(&alice, alice.len() - 2);
    assert_eq!(cached(&s.verifier, &flipped), Err(ErrorKind::BadSignature));
    // The cached ones are still served.
    assert_eq!(cached(&s.verifier, &alice).unwrap().sub, "alice");
    assert_eq!(cached(&s.verifier, &bob).unwrap().sub, "bobby");
    assert_eq!(cache(&s.verifier).len(), 2);
}

#[test]
fn verifiers_sharing_a_cache_do_not_pass_each_others_tokens() {
    let shared = TokenCache::new(64, 1 << 20);
    let s = setup(Algorithm::ES256, shared.clone());
    let t = token(&s, "alice");
    cached(&s.verifier, &t).unwrap();
    // Same keys, a different audience, the same cache.
    let strict = Verifier::new(s.ring.clone())
        .with_clock(s.clock.clone())
        .with_aud("admin")
        .with_cache(shared);
    assert_eq!(
        strict
            .verify_cached::<NoCustomClaims>(&t)
            .unwrap_err()
            .kind(),
        ErrorKind::WrongAudience
    );
    // Reconfiguring a verifier forgets what it cached under its old configuration.
    let reconfigured = s.verifier.clone().with_iss("https://other.test");
    assert_eq!(
        reconfigured
            .verify_cached::<NoCustomClaims>(&t)
            .unwrap_err()
            .kind(),
        ErrorKind::WrongIssuer
    );
    assert!(cached(&s.verifier, &t).is_ok());
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Tenant {
    tenant: Option<String>,
}

#[test]
fn another_claims_type_is_a_miss_not_a_wrong_type() {
    let s = setup(Algorithm::EdDSA, TokenCache::new(64, 1 << 20));
    let t = token(&s, "alice");
    cached(&s.verifier, &t).unwrap();
    let with_tenant = s.verifier.verify_cached::<Tenant>(&t).unwrap();
    assert_eq!(with_tenant.custom, Tenant { tenant: None });
    assert_eq!(with_tenant.sub, "alice");
    // Both types are kept side by side (the two ways of the token's set), not each
    // replacing the other on every request.
    assert_eq!(cache(&s.verifier).len(), 2);
    let used = cache(&s.verifier).bytes();
    for _ in 0..3 {
        assert!(cached(&s.verifier, &t).is_ok());
        assert!(s.verifier.verify_cached::<Tenant>(&t).is_ok());
    }
    assert_eq!(cache(&s.verifier).len(), 2);
    assert_eq!(cache(&s.verifier).bytes(), used, "hits, no new inserts");
}

/// The bytes one entry for `sub`'s token costs (measured in a cache of its own).
fn cost_of(alg: Algorithm, sub: &str) -> usize {
    let s = setup(alg, TokenCache::new(64, 1 << 20));
    cached(&s.verifier, &token(&s, sub)).unwrap();
    cache(&s.verifier).bytes()
}

/// Caches tokens of subjects `{prefix}00`, `{prefix}01` ... (all of one size) until the
/// cache holds `entries` of them: a token can land in a set whose two ways are taken and
/// replace one.
fn fill(s: &Setup, prefix: &str, entries: usize) {
    for i in 0..64 {
        if cache(&s.verifier).len() == entries {
            return;
        }
        cached(&s.verifier, &token(s, &format!("{prefix}{i:02}"))).unwrap();
    }
    panic!("{} entries, not {entries}", cache(&s.verifier).len());
}

// 64 slots: the sweep for room (64 slots at a time) covers the whole table, so what it finds
// does not depend on where the tokens land.

#[test]
fn expired_entries_make_room_when_the_budget_is_full() {
    let long = "x".repeat(60);
    let small = cost_of(Algorithm::EdDSA, "u-00");
    let large = cost_of(Algorithm::EdDSA, &format!("{long}-00"));
    // Room for four large entries: four small ones leave too little for one large one.
    assert!(4 * small + large > 4 * large, "{small} {large}");
    let s = setup(Algorithm::EdDSA, TokenCache::new(64, 4 * large));
    fill(&s, "u-", 4);
    assert_eq!(cache(&s.verifier).bytes(), 4 * small);
    // Nobody presents those four again; once they expire, new tokens take their room (a
    // new token can replace another new one in a set whose ways both hold one: a few more
    // than four may be needed).
    s.clock.advance(Duration::from_secs(61));
    let full = (0..64).any(|i| {
        cached(&s.verifier, &token(&s, &format!("{long}-{i:02}"))).unwrap();
        cache(&s.verifier).bytes() == 4 * large
    });
    assert!(full, "{} bytes", cache(&s.verifier).bytes());
    assert_eq!(cache(&s.verifier).len(), 4, "no small one left");
}

#[test]
fn new_tokens_still_find_room_when_the_budget_is_full_of_live_ones() {
    let long = "x".repeat(60);
    let small = cost_of(Algorithm::ES256, "u-00");
    let large = cost_of(Algorithm::ES256, &format!("{long}-new"));
    assert!(large > small && large <= 2 * small, "{small} {large}");
    let s = setup(Algorithm::ES256, TokenCache::new(64, 4 * small));
    fill(&s, "u-", 4);
    assert_eq!(cache(&s.verifier).bytes(), 4 * small);
    // All four still live: the new token gets in by evicting two of them.
    let fresh = token(&s, &format!("{long}-new"));
    cached(&s.verifier, &fresh).unwrap();
    assert_eq!(cache(&s.verifier).bytes(), 2 * small + large);
    assert_eq!(cache(&s.verifier).len(), 3);
    cached(&s.verifier, &fresh).unwrap();
    assert_eq!(
        cache(&s.verifier).bytes(),
        2 * small + large,
        "the new token is a hit"
    );
}

#[test]
fn entries_and_bytes_stay_within_bounds() {
    let s = setup(Algorithm::EdDSA, TokenCache::new(16, 4096));
    for i in 0..200 {
        let t = token(&s, &format!("user-{i}"));
        assert!(cached(&s.verifier, &t).is_ok());
        let c = cache(&s.verifier);
        assert!(c.len() <= 16, "{}", c.len());
        assert!(c.bytes() <= 4096, "{}", c.bytes());
    }
    assert!(!cache(&s.verifier).is_empty());
    cache(&s.verifier).clear();
    assert_eq!(cache(&s.verifier).bytes(), 0);
    assert!(cache(&s.verifier).is_empty());

    // A budget smaller than one entry caches nothing, and still verifies.
    let tiny = setup(Algorithm::EdDSA, TokenCache::new(16, 10));
    assert!(cached(&tiny.verifier, &token(&tiny, "a")).is_ok());
    assert!(cache(&tiny.verifier).is_empty());
}

#[test]
fn hmac_tokens_are_cached_unless_excluded() {
    let s = setup(Algorithm::HS256, TokenCache::new(64, 1 << 20));
    let t = token(&s, "alice");
    assert!(cached(&s.verifier, &t).is_ok());
    assert_eq!(cache(&s.verifier).len(), 1);
    let s = setup(
        Algorithm::HS256,
        TokenCache::new(64, 1 << 20).include_hmac(false),
    );
    let t = token(&s, "alice");
    assert!(cached(&s.verifier, &t).is_ok());
    assert!(cache(&s.verifier).is_empty());
}

#[test]
fn many_threads_on_one_cache_agree() {
    let s = setup(Algorithm::ES256, TokenCache::new(8, 1 << 20));
    let tokens: Arc<Vec<String>> = Arc::new((0..32).map(|i| token(&s, &format!("u{i}"))).collect());
    let handles: Vec<_> = (0..4)
        .map(|n| {
            let verifier = s.verifier.clone();
            let tokens = Arc::clone(&tokens);
            thread::spawn(move || {
                for round in 0..200 {
                    let i = (round * 7 + n * 13) % tokens.len();
                    let claims = verifier
                        .verify_cached::<NoCustomClaims>(&tokens[i])
                        .unwrap();
                    assert_eq!(claims.sub, format!("u{i}"));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(cache(&s.verifier).len() <= 8);
}

#[test]
fn a_multi_issuer_verifier_caches_through_its_own_cache() {
    let a = setup(Algorithm::ES256, TokenCache::new(64, 1 << 20));
    let b = setup(Algorithm::EdDSA, TokenCache::new(64, 1 << 20));
    let shared = TokenCache::new(64, 1 << 20);
    let router = Verifier::any_of([
        Verifier::new(a.ring.clone())
            .with_clock(a.clock.clone())
            .with_iss("https://a.test"),
        Verifier::new(b.ring.clone())
            .with_clock(b.clock.clone())
            .with_iss("https://b.test"),
    ])
    .unwrap()
    .with_cache(shared.clone());
    let issue = |s: &Setup, iss: &str| {
        let mut claims = Claims::new("alice", NOW + 60, NoCustomClaims {});
        claims.iss = Some(iss.to_owned());
        s.issuer.sign(&claims).unwrap()
    };
    let from_a = issue(&a, "https://a.test");
    let from_b = issue(&b, "https://b.test");
    assert!(router.verify_cached::<NoCustomClaims>(&from_a).is_ok());
    assert!(router.verify_cached::<NoCustomClaims>(&from_b).is_ok());
    assert!(router.verify_cached::<NoCustomClaims>(&from_a).is_ok());
    assert_eq!(
        shared.len(),
        2,
        "one entry per token, in the router's cache"
    );
    // A token signed by A's key but claiming B is checked by B's verifier: refused.
    let forged = issue(&a, "https://b.test");
    assert!(router.verify_cached::<NoCustomClaims>(&forged).is_err());
    // The issuer's own size limit holds on the cached path as on the plain one.
    let small = Verifier::any_of([
        Verifier::new(a.ring.clone())
            .with_clock(a.clock.clone())
            .with_iss("https://a.test")
            .with_max_token_len(from_a.len() - 1),
        Verifier::new(b.ring.clone())
            .with_clock(b.clock.clone())
            .with_iss("https://b.test"),
    ])
    .unwrap()
    .with_cache(TokenCache::new(64, 1 << 20));
    let checks: [fn(&Verifier, &str) -> Option<ErrorKind>; 2] = [
        |v, t| v.verify::<NoCustomClaims>(t).err().map(|e| e.kind()),
        |v, t| v.verify_cached::<NoCustomClaims>(t).err().map(|e| e.kind()),
    ];
    for verify in checks {
        assert_eq!(verify(&small, &from_a), Some(ErrorKind::TooLarge));
    }
    // Expiry still applies to the cached ones.
    a.clock.advance(Duration::from_secs(60 + 30));
    assert_eq!(
        router
            .verify_cached::<NoCustomClaims>(&from_a)
            .unwrap_err()
            .kind(),
        ErrorKind::Expired
    );
}

/// One leeway rule: a service's own tokens are refused the second they expire
/// (`Issuer::verifier`, as the facade's layers), another service's get the 30 s default for
/// the clocks' difference (`Verifier::new`).
#[test]
fn own_tokens_have_no_leeway_and_foreign_ones_the_default() {
    let clock = TestClock::at_secs(NOW);
    let ring = KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
    let issuer = Issuer::new(ring.clone())
        .with_clock(clock.clone())
        .with_ttl(Duration::from_secs(60));
    let token = issuer
        .issue("alice", None, NoCustomClaims {})
        .unwrap()
        .token;
    let own = issuer.verifier();
    let foreign = Verifier::new(ring).with_clock(clock.clone());
    assert!(own.verify::<NoCustomClaims>(&token).is_ok());
    clock.advance(Duration::from_secs(65));
    assert_eq!(
        own.verify::<NoCustomClaims>(&token).unwrap_err().kind(),
        ErrorKind::Expired,
        "5 s expired: refused"
    );
    assert!(
        foreign.verify::<NoCustomClaims>(&token).is_ok(),
        "within the default 30 s for another service's clock"
    );
    clock.advance(Duration::from_secs(30));
    assert!(foreign.verify::<NoCustomClaims>(&token).is_err());
}
