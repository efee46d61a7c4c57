//! Property tests of rotation: any sequence of rotations, reuses of old tokens and clock moves
//! behaves exactly as the model says (never two live tokens for one session), and forged
//! tokens never change stored state.

use std::sync::Arc;
use std::time::Duration;

use baton_core::TestClock;
use baton_store::{
    Device, MemoryStore, Policy, RefreshKeys, RefreshStore, RotateContext, RotateError,
    RotationKind,
};
use proptest::prelude::*;

const GRACE_MS: u64 = 10_000;

#[derive(Clone, Debug)]
enum Op {
    /// Present the token at this index of the history (modulo its length).
    Present(usize),
    /// Move the clock forward.
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<usize>().prop_map(Op::Present),
        1 => (0u64..25_000).prop_map(Op::Wait),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rotation_follows_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        runtime().block_on(async {
            let clock = TestClock::at_millis(1_800_000_000_000);
            let policy = Policy::builder().grace_window(Duration::from_millis(GRACE_MS)).build().unwrap();
            let store = MemoryStore::new(RefreshKeys::new(1, [3u8; 32]).unwrap(), policy).with_clock(Arc::new(clock.clone()));
            let created = store.create("alice", Device::default()).await.unwrap();
            // history[g] is the token of generation g.
            let mut history = vec![created.token.clone()];
            let mut rotated_at = 0u64;
            let mut revoked = false;
            for op in ops {
                match op {
                    Op::Wait(ms) => clock.advance(Duration::from_millis(ms)),
                    Op::Present(i) => {
                        let presented = i % history.len();
                        let current = history.len() - 1;
                        let now = baton_core::Clock::now_millis(&clock);
                        let result = store.rotate(history[presented].expose(), RotateContext::default()).await;
                        if revoked {
                            prop_assert_eq!(result.unwrap_err(), RotateError::Revoked);
                        } else if presented == current {
                            let r = result.unwrap();
                            prop_assert_eq!(r.kind, RotationKind::Rotated);
                            prop_assert_eq!(r.session.generation as usize, current + 1);
                            history.push(r.token);
                            rotated_at = now;
                        } else if presented + 1 == current && now - rotated_at < GRACE_MS {
                            let r = result.unwrap();
                            prop_assert_eq!(r.kind, RotationKind::Graced);
                            prop_assert_eq!(&r.token, &history[current], "the same successor, never a sibling");
                        } else {
                            prop_assert!(matches!(result, Err(RotateError::Reused(_))), "{:?}", result);
                            revoked = true;
                        }
                        let live = store.get(created.session.id).await.unwrap();
                        prop_assert_eq!(live.is_none(), revoked);
                        if let Some(session) = live {
                            prop_assert_eq!(session.generation as usize, history.len() - 1, "one live generation");
                        }
                    }
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn forged_tokens_never_change_stored_state(
        garbage in proptest::collection::vec(any::<u8>(), 0..120),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
    ) {
        runtime().block_on(async {
            let store = MemoryStore::new(RefreshKeys::new(1, [3u8; 32]).unwrap(), Policy::new());
            let created = store.create("alice", Device::default()).await.unwrap();
            let before = store.get(created.session.id).await.unwrap();
            // Arbitrary text.
            let text = String::from_utf8_lossy(&garbage).into_owned();
            prop_assert_eq!(store.rotate(&text, RotateContext::default()).await.unwrap_err(), RotateError::Invalid);
            // The genuine token with bytes changed.
            let mut bytes = created.token.expose().as_bytes().to_vec();
            for (at, x) in flips {
                let at = at % bytes.len();
                bytes[at] ^= x;
            }
            if let Ok(forged) = String::from_utf8(bytes)
                && forged != created.token.expose()
            {
                prop_assert_eq!(store.rotate(&forged, RotateContext::default()).await.unwrap_err(), RotateError::Invalid);
            }
            prop_assert_eq!(store.get(created.session.id).await.unwrap(), before);
            prop_assert_eq!(store.rotate(created.token.expose(), RotateContext::default()).await.unwrap().kind, RotationKind::Rotated);
            Ok(())
        })?;
    }
}
