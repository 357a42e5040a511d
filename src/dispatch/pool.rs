//! A lane's pool of channels to one compute endpoint (one replica): `connections`
//! [`LaneChannel`]s, each its own TCP connection.
//!
//! A channel multiplexes many calls over one HTTP/2 connection, so a call does not hold a
//! pooled object: [`ChannelPool::pick`] hands out the next channel in turn. The lane's
//! concurrency is governed by its permit counter alone, never by the pool. Channels connect
//! lazily and reconnect by themselves, so the BFF starts while compute is down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use super::channel::{ChannelSettings, LaneChannel};

/// `connections` channels to one endpoint, handed out in turn.
pub struct ChannelPool {
    channels: Vec<LaneChannel>,
    next: AtomicUsize,
    /// `Some` when the callers' threads drive the connections (`io_threads = 0`).
    callers: Option<Callers>,
}

/// With `io_threads = 0`, the channels are split into groups, one per HTTP worker (at most
/// one per channel), and each calling thread keeps to its group: the connections it makes
/// there are driven by its own runtime, so its calls never cross to another thread and back.
struct Callers {
    groups: usize,
    /// Threads in the order of their first call here (bounded: later ones share groups).
    seen: Mutex<Vec<ThreadId>>,
}

/// Threads remembered per pool; more share the groups by their position.
const MAX_CALLERS: usize = 256;

impl Callers {
    /// The group of the calling thread.
    fn group(&self) -> usize {
        let me = std::thread::current().id();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let position = match seen.iter().position(|t| *t == me) {
            Some(i) => i,
            None => {
                if seen.len() < MAX_CALLERS {
                    seen.push(me);
                }
                seen.len() - 1
            }
        };
        position % self.groups
    }
}

impl ChannelPool {
    /// `connections` lazily-connected channels (at least one), made as `settings` say.
    /// `workers` is the number of HTTP worker threads (the callers), which matters only when
    /// they drive the connections themselves.
    pub fn new(settings: ChannelSettings, connections: usize, workers: usize) -> Self {
        let connections = connections.max(1);
        let callers = settings.caller_driven().then(|| Callers {
            groups: workers.clamp(1, connections),
            seen: Mutex::new(Vec::new()),
        });
        let settings = Arc::new(settings);
        ChannelPool {
            channels: (0..connections)
                .map(|_| LaneChannel::lazy(Arc::clone(&settings)))
                .collect(),
            next: AtomicUsize::new(0),
            callers,
        }
    }

    /// The next channel in turn: round robin over the pool's connections, or, when the
    /// callers drive them, over those of the calling thread's group.
    pub fn pick(&self) -> LaneChannel {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.channels.len();
        let i = match &self.callers {
            None => turn % n,
            Some(callers) => {
                // Group g holds channels g, g + groups, g + 2 × groups, ...
                let (g, groups) = (callers.group(), callers.groups);
                let members = (n - g).div_ceil(groups);
                g + (turn % members) * groups
            }
        };
        self.channels[i].clone()
    }
}
