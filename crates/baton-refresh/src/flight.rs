//! Single flight: however many requests fail together, one refresh runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a finished flight's result stays for requests that started before it finished.
const KEEP: Duration = Duration::from_secs(30);

use crate::Refreshed;

pub(crate) struct Flight<C> {
    epoch: AtomicU64,
    result: tokio::sync::Mutex<Option<Refreshed<C>>>,
    touched: Mutex<Instant>,
}

impl<C: Clone> Flight<C> {
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
        if let Ok(mut touched) = self.touched.lock() {
            *touched = Instant::now();
        }
        fresh
    }
}

/// Flights by key: one per credential being refreshed (one for a client; one per refresh
/// cookie on a server).
pub(crate) struct Flights<C> {
    map: Mutex<HashMap<String, Arc<Flight<C>>>>,
}

impl<C> Default for Flights<C> {
    fn default() -> Self {
        Flights {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<C> Flights<C> {
    pub(crate) fn get(&self, key: &str) -> Arc<Flight<C>> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 64 {
            let now = Instant::now();
            map.retain(|_, f| {
                Arc::strong_count(f) > 1
                    || f.touched
                        .lock()
                        .map_or(true, |t| now.duration_since(*t) < KEEP)
            });
        }
        map.entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Flight {
                    epoch: AtomicU64::new(0),
                    result: tokio::sync::Mutex::new(None),
                    touched: Mutex::new(Instant::now()),
                })
            })
            .clone()
    }
}
