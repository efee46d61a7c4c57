//! The log's entries: one revocation per stream entry, as text, and the reply parsing.

use baton_core::{Revocation, RevocationList};
use redis::Value;

/// One revocation as it travels: `s\x1f<sid>` or `u\x1f<sub>\x1f<before, s>`.
pub(super) fn encode(revocation: &Revocation) -> Option<String> {
    match revocation {
        Revocation::Session(sid) => Some(format!("s\u{1f}{sid}")),
        Revocation::UserBefore { sub, before } => Some(format!("u\u{1f}{sub}\u{1f}{before}")),
        _ => None,
    }
}

pub(super) fn decode(event: &str) -> Option<Revocation> {
    if let Some(sid) = event.strip_prefix("s\u{1f}") {
        return Some(Revocation::session(sid));
    }
    let (sub, before) = event.strip_prefix("u\u{1f}")?.rsplit_once('\u{1f}')?;
    Some(Revocation::user_before(sub, before.parse().ok()?))
}

pub(super) fn apply(list: &RevocationList, event: &str) {
    match decode(event) {
        Some(revocation) => list.apply(&revocation),
        None => tracing::debug!(target: "baton::redis", "unknown revocation event ignored"),
    }
}

/// A stream entry id `ms-seq` as a pair, for ordering.
pub(super) fn entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

pub(super) fn text(value: &Value) -> Option<String> {
    redis::from_redis_value_ref::<String>(value).ok()
}

/// The `(id, event)` pairs of an `XRANGE` reply (RESP2 or RESP3).
pub(super) fn entries(reply: &Value) -> Vec<(String, Option<String>)> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(parts) = item else {
                return None;
            };
            let id = text(parts.first()?)?;
            let event = match parts.get(1)? {
                Value::Array(fields) => fields
                    .chunks(2)
                    .find(|kv| kv.first().and_then(text).as_deref() == Some("e"))
                    .and_then(|kv| kv.get(1).and_then(text)),
                Value::Map(fields) => fields
                    .iter()
                    .find(|(k, _)| text(k).as_deref() == Some("e"))
                    .and_then(|(_, v)| text(v)),
                _ => None,
            };
            Some((id, event))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        for revocation in [
            Revocation::session("s1"),
            Revocation::user_before("alice", 1_800_000_000),
            Revocation::user_before("odd\u{1f}name", 7),
        ] {
            let event = encode(&revocation).unwrap();
            assert_eq!(decode(&event), Some(revocation));
        }
        assert_eq!(decode("x\u{1f}y"), None);
        assert_eq!(decode("u\u{1f}alice\u{1f}soon"), None);
    }

    #[test]
    fn entry_ids_order_numerically() {
        assert!(entry_id("10-0") > entry_id("9-5"));
        assert!(entry_id("10-10") > entry_id("10-9"));
        assert_eq!(entry_id("junk"), None);
    }
}
