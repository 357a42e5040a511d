//! Gives the heap pages freed by large request bodies back to the OS, soon after they are freed.
//!
//! glibc's malloc keeps what a program frees: the pages stay resident, to be reused by later
//! allocations, and only the very top of a heap is returned on its own. A burst of uploads
//! leaves behind the buffers its bodies grew (actix's read buffers, the multipart parser's,
//! the chunks between them: ~0.5 MiB per upload, scattered between live allocations), so
//! the BFF's resident memory after a burst stayed above what `bff.max_buffered_bytes` counts
//! (docs/benchmarks-edge.md, budget phase). `malloc_trim(0)` hands every free page of every
//! arena back (`MADV_DONTNEED`).
//!
//! It runs on its own thread, never on an HTTP worker: it takes each arena's lock while it
//! walks it. Calls are coalesced (a burst frees many bodies within milliseconds) and spaced,
//! so that a steady stream of large uploads does not pay for the page faults of reusing
//! trimmed pages more than a few times a second. Elsewhere than Linux with glibc this is a
//! no-op.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A release smaller than this does not ask for a trim: small bodies leave little behind.
pub const TRIM_AFTER_BYTES: usize = 1 << 20;

/// How long a trim waits after the first release that asked for it, so that the rest of a
/// burst is freed by then and one trim returns it all.
const COALESCE: Duration = Duration::from_millis(10);

/// The least time between two trims.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

static TRIMMER: OnceLock<Option<Trimmer>> = OnceLock::new();

/// Says that the buffers of a request body of `bytes` were just freed (the body itself, or
/// what reading it took); a large one schedules a trim. Never blocks.
pub fn released(bytes: usize) {
    if bytes < TRIM_AFTER_BYTES {
        return;
    }
    let trimmer = TRIMMER.get_or_init(|| {
        if !supported() {
            return None;
        }
        Trimmer::start(trim)
            .map_err(|e| {
                tracing::warn!(error = %e, "could not start the heap-trim thread; freed body buffers stay resident")
            })
            .ok()
    });
    if let Some(trimmer) = trimmer {
        trimmer.ask();
    }
}

/// Trims done so far by the BFF's trimmer.
pub fn trims() -> u64 {
    TRIMMER
        .get()
        .and_then(Option::as_ref)
        .map_or(0, |t| t.trims.load(Ordering::Relaxed))
}

/// A thread that runs `trim` when asked, coalescing and spacing the requests.
struct Trimmer {
    wake: SyncSender<()>,
    trims: Arc<AtomicU64>,
}

impl Trimmer {
    fn start(trim: fn()) -> std::io::Result<Self> {
        // One slot: a request while one is pending is covered by it.
        let (wake, woken) = sync_channel::<()>(1);
        let trims = Arc::new(AtomicU64::new(0));
        let done = trims.clone();
        std::thread::Builder::new()
            .name("heap-trim".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    std::thread::sleep(COALESCE);
                    // Requests during the wait are covered by this trim.
                    while woken.try_recv().is_ok() {}
                    trim();
                    done.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(MIN_INTERVAL.saturating_sub(COALESCE));
                }
            })?;
        Ok(Trimmer { wake, trims })
    }

    /// Asks for a trim; never blocks.
    fn ask(&self) {
        let _ = self.wake.try_send(());
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn supported() -> bool {
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn supported() -> bool {
    false
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks and madvises glibc's own free lists; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(trimmer: &Trimmer, n: u64) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while trimmer.trims.load(Ordering::Relaxed) < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        trimmer.trims.load(Ordering::Relaxed)
    }

    #[test]
    fn a_burst_of_requests_is_one_trim_and_a_later_one_trims_again() {
        let trimmer = Trimmer::start(|| {}).unwrap();
        for _ in 0..50 {
            trimmer.ask();
        }
        assert!(wait_for(&trimmer, 1) >= 1, "no trim after a burst");
        // The burst's other 49 land while the first waits: covered, not queued. (Two if this
        // thread was descheduled for longer than the coalescing wait mid-loop.)
        std::thread::sleep(MIN_INTERVAL * 2);
        let after_burst = trimmer.trims.load(Ordering::Relaxed);
        assert!(after_burst <= 2, "{after_burst} trims for one burst");
        trimmer.ask();
        assert_eq!(
            wait_for(&trimmer, after_burst + 1),
            after_burst + 1,
            "a later request did not trim"
        );
    }
}
