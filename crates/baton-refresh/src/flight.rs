//! Single flight: however many requests fail together, one refresh runs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Refreshed;

/// How long a finished flight's result stays for requests that started before it finished.
const KEEP: Duration = Duration::from_secs(30);
/// The most flights kept at once; past it, a new credential refreshes without sharing.
pub(crate) const MAX_FLIGHTS: usize = 10_000;
/// Old entries looked at per call: expiry costs a bounded amount of work per request, never a
/// scan of the whole map.
const EXPIRE_PER_CALL: usize = 4;

pub(crate) struct Flight<C> {
    epoch: AtomicU64,
    result: tokio::sync::Mutex<Option<Refreshed<C>>>,
}

impl<C: Clone> Flight<C> {
    fn new() -> Self {
        Flight {
            epoch: AtomicU64::new(0),
            result: tokio::sync::Mutex::new(None),
        }
    }

    /// The epoch a request saw before its first attempt.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Runs `refresh` unless a refresh finished since `seen`, in which case its result is
    /// shared. Concurrent callers wait for the one that runs.
    pub(crate) async fn refresh<F, Fut>(&self, seen: u64, refresh: F) -> Refreshed<C>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Refreshed<C>>,
    {
        let mut result = self.result.lock().await;
        if self.epoch.load(Ordering::Acquire) != seen {
            return result.clone().unwrap_or(Refreshed::Refused);
        }
        let fresh = refresh().await;
        *result = Some(fresh.clone());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        fresh
    }
}

struct Entry<C> {
    id: u64,
    flight: Arc<Flight<C>>,
}

struct Inner<C> {
    map: HashMap<String, Entry<C>>,
    /// Keys in the order they were added (with the entry's id), for expiry from the front.
    order: VecDeque<(String, u64, Instant)>,
    next_id: u64,
}

/// Flights by key: one per credential being refreshed (one for a client; one per session on
/// a server). Bounded ([`MAX_FLIGHTS`]); entries older than 30 s that no request holds are
/// dropped a few at a time as new ones come.
pub(crate) struct Flights<C> {
    inner: Mutex<Inner<C>>,
}

impl<C> Default for Flights<C> {
    fn default() -> Self {
        Flights {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
                next_id: 0,
            }),
        }
    }
}

impl<C: Clone> Flights<C> {
    pub(crate) fn get(&self, key: &str) -> Arc<Flight<C>> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        for _ in 0..EXPIRE_PER_CALL {
            let Some((_, _, added)) = inner.order.front() else {
                break;
            };
            if now.duration_since(*added) < KEEP {
                break;
            }
            let Some((old, id, _)) = inner.order.pop_front() else {
                break;
            };
            let in_use = inner
                .map
                .get(&old)
                .is_some_and(|e| e.id == id && Arc::strong_count(&e.flight) > 1);
            if in_use {
                // A request still holds it: look again later.
                inner.order.push_back((old, id, now));
            } else if inner.map.get(&old).is_some_and(|e| e.id == id) {
                inner.map.remove(&old);
            }
        }
        if let Some(entry) = inner.map.get(key) {
            return entry.flight.clone();
        }
        let flight = Arc::new(Flight::new());
        if inner.map.len() >= MAX_FLIGHTS {
            // Full: this credential refreshes on its own rather than evicting a live one.
            return flight;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.map.insert(
            key.to_owned(),
            Entry {
                id,
                flight: flight.clone(),
            },
        );
        inner.order.push_back((key.to_owned(), id, now));
        flight
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_is_bounded_and_a_full_map_still_gives_a_flight() {
        let flights = Flights::<u32>::default();
        for i in 0..MAX_FLIGHTS + 500 {
            let flight = flights.get(&format!("k{i}"));
            assert_eq!(flight.epoch(), 0);
        }
        assert_eq!(flights.len(), MAX_FLIGHTS);
        // An existing key still shares its flight.
        assert!(Arc::ptr_eq(&flights.get("k1"), &flights.get("k1")));
    }
}
