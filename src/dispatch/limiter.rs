//! A lane's admission control: one permit counter shared by the whole lane, whose capacity can
//! grow and shrink at run time. Lowering the limit never interrupts calls in flight: the
//! excess permits are retired as those calls finish.
//!
//! The wait for a permit is bounded twice: in time (`queue_wait`) and in length
//! (`max_queued`). Under sustained overload a queue bounded only in time stays full, so every
//! shed call waits the whole `queue_wait` for nothing and every admitted one waits almost as
//! long (`docs/benchmarks-overload.md`); with a short queue the excess is refused at once
//! and the calls that do wait are served within about one call's time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A resizable concurrency limit.
#[derive(Debug)]
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    state: Mutex<LimitState>,
    /// Callers waiting for a permit now, and how many may.
    queued: AtomicUsize,
    max_queued: AtomicUsize,
}

/// Counts a caller as queued while it waits.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct LimitState {
    limit: usize,
    /// Permits still held by callers that must be retired when released (after a shrink).
    debt: usize,
}

/// Held for the whole call (for a stream, until the stream is dropped).
#[derive(Debug)]
pub struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    limiter: Arc<Limiter>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut state = self.limiter.state.lock().expect("limiter lock");
        if state.debt > 0 {
            state.debt -= 1;
            permit.forget();
        } else {
            // Returned under the lock: a concurrent shrink then sees it in the semaphore
            // and forgets it, rather than counting a debt this permit never repays (which
            // would admit one call over the new limit).
            drop(permit);
        }
        drop(state);
    }
}

impl Limiter {
    /// A limiter admitting `limit` calls at once, with no bound on waiters yet.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Limiter {
            semaphore: Arc::new(Semaphore::new(limit)),
            state: Mutex::new(LimitState { limit, debt: 0 }),
            queued: AtomicUsize::new(0),
            max_queued: AtomicUsize::new(usize::MAX),
        })
    }

    /// How many callers may wait for a permit at once; beyond that a call is shed at once.
    pub fn set_max_queued(&self, max: usize) {
        self.max_queued.store(max, Ordering::Relaxed);
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        self.state.lock().expect("limiter lock").limit
    }

    /// Waits up to `wait` for a permit, if fewer than `max_queued` callers are waiting
    /// already; `None` means the lane is saturated (shed the call).
    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Option<Permit> {
        let semaphore = self.semaphore.clone();
        let permit = match semaphore.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) if wait.is_zero() => None,
            Err(_) => {
                let max = self.max_queued.load(Ordering::Relaxed);
                if self.queued.fetch_add(1, Ordering::AcqRel) >= max {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                let _queued = Queued(&self.queued);
                tokio::time::timeout(wait, semaphore.acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        }?;
        Some(Permit {
            permit: Some(permit),
            limiter: self.clone(),
        })
    }

    /// Whether a call arriving now would be shed: no permit is free and there is no room to
    /// wait for one (`wait` is zero, or `max_queued` callers wait already). A hint for work that
    /// comes before the call (reading its upload), not a reservation: [`Limiter::acquire`]
    /// still decides.
    pub fn is_saturated(&self, wait: Duration) -> bool {
        self.semaphore.available_permits() == 0
            && (wait.is_zero()
                || self.queued.load(Ordering::Acquire) >= self.max_queued.load(Ordering::Relaxed))
    }

    /// Changes the limit; calls in flight keep their permits.
    pub fn set_limit(&self, new: usize) {
        let mut state = self.state.lock().expect("limiter lock");
        let old = state.limit;
        if new > old {
            let grow = new - old;
            let repaid = grow.min(state.debt);
            state.debt -= repaid;
            self.semaphore.add_permits(grow - repaid);
        } else if new < old {
            let shrink = old - new;
            let forgotten = self.semaphore.forget_permits(shrink);
            state.debt += shrink - forgotten;
        }
        state.limit = new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn saturated_means_no_permit_and_no_room_to_wait() {
        let l = Limiter::new(1);
        l.set_max_queued(1);
        let wait = Duration::from_millis(100);
        assert!(!l.is_saturated(Duration::ZERO), "a free permit");
        let held = l.acquire(Duration::ZERO).await.unwrap();
        assert!(l.is_saturated(Duration::ZERO), "no permit and no wait");
        assert!(!l.is_saturated(wait), "room in the queue");
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire(wait).await.is_some() });
        tokio::task::yield_now().await;
        assert!(l.is_saturated(wait), "the queue is full");
        drop(held);
        assert!(waiter.await.unwrap());
        assert!(!l.is_saturated(wait));
    }

    #[tokio::test(start_paused = true)]
    async fn sheds_after_the_queue_wait() {
        let l = Limiter::new(1);
        let held = l.acquire(Duration::ZERO).await.unwrap();
        let start = tokio::time::Instant::now();
        assert!(l.acquire(Duration::from_millis(250)).await.is_none());
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        drop(held);
        assert!(l.acquire(Duration::ZERO).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_a_released_permit() {
        let l = Limiter::new(1);
        let held = l.acquire(Duration::ZERO).await.unwrap();
        let l2 = l.clone();
        let waiter =
            tokio::spawn(async move { l2.acquire(Duration::from_secs(1)).await.is_some() });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_max_queued_a_call_is_shed_at_once() {
        let l = Limiter::new(1);
        l.set_max_queued(2);
        let held = l.acquire(Duration::ZERO).await.unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move { l.acquire(Duration::from_secs(1)).await.is_some() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Two wait; the third is refused without waiting.
        let start = tokio::time::Instant::now();
        assert!(l.acquire(Duration::from_secs(1)).await.is_none());
        assert_eq!(start.elapsed(), Duration::ZERO);
        drop(held);
        let served: Vec<bool> = futures_util::future::join_all(waiters)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        // Each waiter got the permit in turn (a task drops it as it ends).
        assert_eq!(served, [true, true]);
        assert_eq!(l.queued.load(Ordering::Relaxed), 0, "nothing left queued");
        // The queue has room again.
        let again = l.acquire(Duration::from_millis(10)).await;
        assert!(again.is_some());
    }

    #[tokio::test]
    async fn shrinking_lets_calls_finish_then_enforces_the_new_limit() {
        let l = Limiter::new(3);
        let a = l.acquire(Duration::ZERO).await.unwrap();
        let b = l.acquire(Duration::ZERO).await.unwrap();
        l.set_limit(1);
        assert_eq!(l.limit(), 1);
        assert!(
            l.acquire(Duration::ZERO).await.is_none(),
            "two in flight, limit one"
        );
        drop(a);
        assert!(
            l.acquire(Duration::ZERO).await.is_none(),
            "still one in flight"
        );
        drop(b);
        let c = l.acquire(Duration::ZERO).await.unwrap();
        assert!(l.acquire(Duration::ZERO).await.is_none());
        drop(c);
    }

    #[tokio::test]
    async fn growing_repays_debt_first() {
        let l = Limiter::new(2);
        let a = l.acquire(Duration::ZERO).await.unwrap();
        let b = l.acquire(Duration::ZERO).await.unwrap();
        l.set_limit(1); // debt 1
        l.set_limit(3); // repays the debt, adds one permit
        let c = l.acquire(Duration::ZERO).await.unwrap();
        assert!(l.acquire(Duration::ZERO).await.is_none(), "three in flight");
        drop((a, b, c));
        let all: Vec<_> = [(); 3]
            .iter()
            .map(|_| l.semaphore.available_permits())
            .collect();
        assert_eq!(all[0], 3);
    }
}
