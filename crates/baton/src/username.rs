//! One canonical form per username.

use icu_casemap::CaseMapper;
use icu_normalizer::ComposingNormalizer;

/// The canonical form of a username: Unicode NFKC, then full case folding, then NFKC again
/// (close to Unicode's `NFKC_Casefold`), with surrounding white space trimmed.
///
/// Use it wherever a name is a key (registration, login, limits), and keep what the user typed
/// only for display: `ALICE`, `alice`, `Ａｌｉｃｅ` (full-width) and `ﬀ`/`ff` then name the same
/// account, so nobody registers a look-alike of an existing name and nobody spends another
/// name's limits by changing its case. `None` for a name that is empty once canonical.
///
/// ```
/// use baton::canonical_username;
///
/// assert_eq!(canonical_username("ALICE").as_deref(), Some("alice"));
/// assert_eq!(canonical_username("Ａｌｉｃｅ").as_deref(), Some("alice"));
/// assert_eq!(canonical_username("Straße").as_deref(), Some("strasse"));
/// assert_eq!(canonical_username("  "), None);
/// ```
pub fn canonical_username(name: &str) -> Option<String> {
    let nfkc = ComposingNormalizer::new_nfkc();
    let folded = CaseMapper::new()
        .fold_string(&nfkc.normalize(name.trim()))
        .into_owned();
    let canonical = nfkc.normalize(&folded).trim().to_owned();
    (!canonical.is_empty()).then_some(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_meet() {
        for (a, b) in [
            ("alice", "ALICE"),
            ("alice", "Ａｌｉｃｅ"),
            ("office", "oﬃce"),
            ("strasse", "STRASSE"),
            ("straße", "Strasse"),
            ("ǅemal", "DŽEMAL"),
            ("café", "cafe\u{301}"),
        ] {
            assert_eq!(canonical_username(a), canonical_username(b), "{a} vs {b}");
        }
        assert_ne!(canonical_username("alice"), canonical_username("alicf"));
        assert_eq!(canonical_username(""), None);
    }
}
