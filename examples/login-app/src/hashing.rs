//! The password-hashing pool: a fixed set of threads, bounded queues, logins first.
//!
//! Each argon2 hash takes 19 MiB and a core for tens of milliseconds, so hashing runs on one
//! thread per core, never on the async runtime. Jobs wait in two bounded queues, one for
//! logins and one for registrations, and a free thread takes a login first (but every fourth
//! job is a registration while both wait, so neither starves): a flood of registrations
//! delays a login by at most a quarter, and a full queue answers at once ([`Busy`]: the
//! caller says 503 with `Retry-After`) instead of queueing work nobody will wait for. A job
//! whose request has gone (timed out, disconnected) is dropped before it hashes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

thread_local! {
    /// This thread's argon2 working memory, allocated by its first hash and reused by every
    /// one after: the hashing threads hold `threads x m_cost` between them, and no 19 MiB
    /// block is ever freed for the allocator to keep (glibc raises its mmap threshold to the
    /// size of a freed mapping, so later blocks would come from arenas it never returns).
    static ARGON_MEMORY: RefCell<Vec<argon2::Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `blocks` blocks of this thread's argon2 memory (see [`ARGON_MEMORY`]).
pub(crate) fn with_argon_memory<R>(blocks: usize, f: impl FnOnce(&mut [argon2::Block]) -> R) -> R {
    ARGON_MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            // Once per thread (or when the parameters grow): exactly what is needed.
            *memory = vec![argon2::Block::default(); blocks];
        }
        f(&mut memory[..blocks])
    })
}

/// Which queue a job waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Logins (and re-authentications): served first.
    Login,
    /// Registrations: served when no login waits.
    Register,
}

/// The queue of that lane is full: try again shortly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Busy;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queues {
    login: VecDeque<Job>,
    register: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
}

/// A fixed set of hashing threads with a bounded queue per lane.
pub(crate) struct HashPool {
    shared: Arc<Shared>,
    capacity: usize,
}

impl HashPool {
    /// `threads` threads; at most `capacity` jobs waiting per lane.
    pub(crate) fn new(threads: usize, capacity: usize) -> Self {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            ready: Condvar::new(),
        });
        for i in 0..threads.max(1) {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(&shared));
            if let Err(e) = spawned {
                tracing::error!(target: "login_app", error = %e, "could not start a hashing thread");
            }
        }
        HashPool {
            shared,
            capacity: capacity.max(1),
        }
    }

    /// Runs `f` on a hashing thread. [`Busy`] when the lane's queue is full (or no thread
    /// runs).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The request went away while this waited: nobody needs the hash.
            if done.is_closed() {
                metrics::counter!("login_app_hash_jobs_dropped_total").increment(1);
                return;
            }
            let _ = done.send(f());
        });
        {
            let mut queues = self
                .shared
                .queues
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let queue = match lane {
                Lane::Login => &mut queues.login,
                Lane::Register => &mut queues.register,
            };
            if queue.len() >= self.capacity {
                metrics::counter!("login_app_hash_queue_full_total").increment(1);
                return Err(Busy);
            }
            queue.push_back(job);
        }
        self.shared.ready.notify_one();
        result.await.map_err(|_| Busy)
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.shared
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .closed = true;
        self.shared.ready.notify_all();
    }
}

/// While both lanes wait, one job in this many is a registration: logins go first, but a
/// steady stream of them does not starve registrations.
const REGISTER_SHARE: usize = 4;

fn work(shared: &Shared) {
    let mut logins_in_a_row = 0;
    loop {
        let job = {
            let mut queues = shared
                .queues
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if logins_in_a_row + 1 >= REGISTER_SHARE
                    && let Some(job) = queues.register.pop_front()
                {
                    logins_in_a_row = 0;
                    break job;
                }
                if let Some(job) = queues.login.pop_front() {
                    logins_in_a_row += 1;
                    break job;
                }
                if let Some(job) = queues.register.pop_front() {
                    logins_in_a_row = 0;
                    break job;
                }
                if queues.closed {
                    return;
                }
                queues = shared
                    .ready
                    .wait(queues)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Occupies the pool's only thread with a job of `lane` until the sender is used.
    async fn hold(
        pool: &Arc<HashPool>,
        lane: Lane,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), Busy>>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let pool = pool.clone();
        let blocker = tokio::spawn(async move {
            pool.run(lane, move || {
                let _ = held.recv();
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        (release, blocker)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logins_go_first_and_a_full_lane_answers_busy_at_once() {
        let pool = Arc::new(HashPool::new(1, 2));
        // Hold the only thread.
        let (release, blocker) = hold(&pool, Lane::Register).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for (lane, name) in [
            (Lane::Register, "register-1"),
            (Lane::Register, "register-2"),
            (Lane::Login, "login-1"),
        ] {
            let (pool, order) = (pool.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                pool.run(lane, move || order.lock().unwrap().push(name))
                    .await
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let full = pool.run(Lane::Register, || ()).await;
        assert_eq!(full, Err(Busy), "the register lane holds 2");
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for task in waiting {
            task.await.unwrap().unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec!["login-1", "register-1", "register-2"],
            "the login waited least"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_of_logins_does_not_starve_registrations() {
        let pool = Arc::new(HashPool::new(1, 16));
        let (release, blocker) = hold(&pool, Lane::Login).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        let jobs = std::iter::once((Lane::Register, "register"))
            .chain(std::iter::repeat_n((Lane::Login, "login"), 8));
        for (lane, name) in jobs {
            let (pool, order) = (pool.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                pool.run(lane, move || order.lock().unwrap().push(name))
                    .await
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for task in waiting {
            task.await.unwrap().unwrap();
        }
        let order = order.lock().unwrap();
        let at = order.iter().position(|n| *n == "register").unwrap();
        assert!(
            at < REGISTER_SHARE,
            "the registration waited behind {at} logins"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_caller_left_is_not_run() {
        let pool = Arc::new(HashPool::new(1, 4));
        let (release, blocker) = hold(&pool, Lane::Login).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let pool2 = pool.clone();
        let gone = tokio::spawn(async move {
            pool2
                .run(Lane::Login, move || {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                })
                .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The request times out: its future is dropped while the job waits.
        gone.abort();
        let _ = gone.await;
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        // A later job runs after it, so the dropped one had its turn.
        pool.run(Lane::Login, || ()).await.unwrap();
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
