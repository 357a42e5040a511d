//! The bounded CPU pool: image work runs here, never on the async threads.
//!
//! A fixed set of rayon threads does the work; a semaphore of `workers + queue_capacity` slots
//! bounds what may wait for them, so overload is answered at once (QUEUE_FULL) instead of
//! queueing without end. A job whose caller has gone away, or whose deadline has passed by the
//! time a thread is free, is never started.

use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why a job did not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// Every place, running or waiting, is taken (the number is how many there are).
    #[error("the compute work queue is full ({0} jobs waiting or running); retry later")]
    QueueFull(usize),
    /// The caller's deadline passed while the job waited for a thread.
    #[error("the deadline passed before the work could start")]
    DeadlineExceeded,
    /// The pool is closed: compute is shutting down.
    #[error("the compute pool is shutting down")]
    Closed,
}

/// A fixed pool of CPU threads with a bounded queue in front.
#[derive(Clone)]
pub struct CpuPool {
    threads: Arc<rayon::ThreadPool>,
    slots: Arc<Semaphore>,
    capacity: usize,
    queue_depth: IntGauge,
}

/// A reserved place in the queue; the job holds it until it finishes.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl CpuPool {
    /// `workers` threads (0 = one per core) at nice value `nice`, and room for
    /// `queue_capacity` waiting jobs.
    pub fn new(
        workers: usize,
        queue_capacity: usize,
        nice: i32,
        queue_depth: IntGauge,
    ) -> anyhow::Result<Self> {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            workers
        };
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("imagegate-cpu-{i}"))
            .start_handler(move |_| {
                static NICE_UNSUPPORTED: std::sync::Once = std::sync::Once::new();
                if let Err(e) = crate::sockopt::set_current_thread_nice(nice) {
                    crate::sockopt::warn_once(&NICE_UNSUPPORTED, "compute.cpu_nice", &e);
                }
            })
            .build()?;
        let capacity = workers + queue_capacity;
        Ok(CpuPool {
            threads: Arc::new(threads),
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            queue_depth,
        })
    }

    /// Number of CPU threads.
    pub fn workers(&self) -> usize {
        self.threads.current_num_threads()
    }

    /// Reserve a place now, or fail with `QueueFull`.
    pub fn try_reserve(&self) -> Result<Slot, PoolError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(Slot)
            .map_err(|_| PoolError::QueueFull(self.capacity))
    }

    /// Reserve a place, waiting for one (used by the later images of a batch, whose first
    /// image already passed the fail-fast check).
    pub async fn reserve(&self) -> Result<Slot, PoolError> {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map(Slot)
            .map_err(|_| PoolError::Closed)
    }

    /// Run `job` on a CPU thread and await its result. The job is skipped if `deadline`
    /// has passed or the caller stopped waiting before a thread picked it up.
    pub async fn run<T, F>(
        &self,
        slot: Slot,
        deadline: Option<Instant>,
        job: F,
    ) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let depth = self.queue_depth.clone();
        depth.inc();
        self.threads.spawn(move || {
            depth.dec();
            let _slot = slot;
            if tx.is_closed() {
                return; // the caller went away: don't waste the CPU
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = tx.send(Err(PoolError::DeadlineExceeded));
                return;
            }
            let _ = tx.send(Ok(job()));
        });
        rx.await.map_err(|_| PoolError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pool(workers: usize, queue: usize) -> CpuPool {
        CpuPool::new(workers, queue, 0, IntGauge::new("q", "q").unwrap()).unwrap()
    }

    #[tokio::test]
    async fn runs_work_off_the_async_threads() {
        let p = pool(1, 1);
        let name = p
            .run(p.try_reserve().unwrap(), None, || {
                std::thread::current().name().map(str::to_owned)
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("imagegate-cpu-0"));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_frees_its_slots() {
        let p = pool(1, 1);
        let a = p.try_reserve().unwrap();
        let b = p.try_reserve().unwrap();
        assert_eq!(p.try_reserve().err(), Some(PoolError::QueueFull(2)));
        drop(a);
        assert!(p.try_reserve().is_ok());
        drop(b);
    }

    #[tokio::test]
    async fn expired_work_is_not_started() {
        let p = pool(1, 1);
        let past = Instant::now() - Duration::from_millis(1);
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = started.clone();
        let r = p
            .run(p.try_reserve().unwrap(), Some(past), move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst)
            })
            .await;
        assert_eq!(r, Err(PoolError::DeadlineExceeded));
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
    }
}
