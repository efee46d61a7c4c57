//! The feed's background tasks: the poller that reads the log (and retries what could not be
//! recorded), and the subscriber that wakes it when another instance writes.

use std::sync::Arc;

use super::*;

/// Reads the log every poll period; retries deferred writes with backoff; every few seconds
/// checks that the log did not go back (a Redis that lost it, or a replica promoted with an
/// older clock), and reads it whole if it did.
pub(super) async fn poll(shared: Arc<Shared>) {
    let mut last: Option<String> = None;
    let mut last_check = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut next_flush = tokio::time::Instant::now();
    let mut was_connected = shared.connected();
    loop {
        if tokio::time::Instant::now() >= next_flush {
            if shared.flush().await {
                backoff = Duration::from_millis(100);
            } else {
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            next_flush = tokio::time::Instant::now() + backoff;
        }
        if last.is_some() && last_check.elapsed() >= shared.resync_every {
            last_check = tokio::time::Instant::now();
            match shared.newest().await {
                // Gone (expired, or lost): whatever comes next is new.
                Ok(None) => last = None,
                Ok(Some(newest)) if entry_id(&newest) < last.as_deref().and_then(entry_id) => {
                    tracing::warn!(target: "baton::redis", "the revocation log went back; reading it whole");
                    shared.resync.store(true, Ordering::Release);
                }
                Ok(Some(_)) => {}
                Err(_) => shared.resync.store(true, Ordering::Release),
            }
        }
        let full = shared.resync.swap(false, Ordering::AcqRel);
        let after = if full { None } else { last.as_deref() };
        match shared.read(after).await {
            Ok(seen) => {
                if seen.is_some() || full {
                    last = seen;
                }
            }
            Err(_) => {
                // Redis may have restarted or failed over: read the whole log next time.
                shared.resync.store(true, Ordering::Release);
            }
        }
        let connected = shared.connected();
        if connected != was_connected {
            if connected {
                tracing::info!(target: "baton::redis", "revocation log readable again; caught up");
            } else {
                tracing::error!(target: "baton::redis", "revocation log unreadable: revocations from other instances wait until it is back");
            }
            was_connected = connected;
        }
        tokio::time::sleep(shared.poll).await;
    }
}

/// Live delivery: a subscription on the channel, reconnected with backoff.
pub(super) async fn subscribe(shared: Arc<Shared>) {
    let clients = shared.conn.subscribers().to_vec();
    let mut backoff = Duration::from_millis(50);
    for round in 0usize.. {
        let client = &clients[round % clients.len()];
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&shared.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(Duration::from_secs(2), connected).await {
            tracing::debug!(target: "baton::redis", "revocation channel subscribed");
            // Anything published while unsubscribed is in the log: read it at once.
            shared.resync.store(true, Ordering::Release);
            backoff = Duration::from_millis(50);
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                if let Ok(event) = message.get_payload::<String>() {
                    apply(shared.state.list(), &event);
                }
            }
            tracing::debug!(target: "baton::redis", "revocation channel lost; the log reader covers until it is back");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
