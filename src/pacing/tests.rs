//! The pacer against a simulated bottleneck under tokio's paused clock: a link of `capacity`
//! bytes per second with a drop-tail buffer of 50 ms in front of it, fed by a sender that, left
//! alone, sends 25 % faster than the link (as several TCP flows together keep a queue full),
//! and a round-trip estimate that follows the queue as a smoothed RTT does.

use super::*;

const TARGET: Duration = Duration::from_millis(3);
const FLOOR: u64 = 1 << 20;
const MBIT: f64 = 1e6 / 8.0;

struct Link {
    /// Bytes per second the bottleneck forwards.
    capacity: f64,
    /// Bytes queued in front of it.
    queue: f64,
    /// The sender's own rate when nothing caps it.
    greedy: f64,
    /// The smoothed estimate of the queue's delay (seconds).
    srtt_queue: f64,
    /// Delay the pacer sees that is not this queue's (a queue on the way back).
    srtt_offset: Duration,
    pacer: Pacer,
    start: Instant,
}

/// One tick: what happened on the link and the pacer's answer.
#[derive(Debug, Clone, Copy)]
struct Step {
    at: Duration,
    /// The queue's real delay at the end of the tick.
    delay: Duration,
    /// Bytes per second delivered over the tick.
    goodput: f64,
    rate: Option<u64>,
}

impl Link {
    fn new(capacity: f64) -> Self {
        let start = Instant::now();
        Link {
            capacity,
            queue: 0.0,
            greedy: capacity * 1.25,
            srtt_queue: 0.0,
            srtt_offset: Duration::ZERO,
            pacer: Pacer::new(start),
            start,
        }
    }

    async fn run(&mut self, secs: f64) -> Vec<Step> {
        let ticks = (secs / TICK.as_secs_f64()).round() as usize;
        let mut steps = Vec::with_capacity(ticks);
        for _ in 0..ticks {
            let mut delivered = 0.0;
            // 1 ms sub-steps inside the tick: send, queue, forward.
            let ms = TICK.as_millis() as usize;
            for _ in 0..ms {
                let send = self
                    .pacer
                    .rate()
                    .map_or(self.greedy, |r| (r as f64).min(self.greedy));
                let arrive = send / 1000.0;
                let buffer = self.capacity * 0.050;
                self.queue = (self.queue + arrive).min(buffer);
                let out = self.queue.min(self.capacity / 1000.0);
                self.queue -= out;
                delivered += out;
                // srtt = 7/8 srtt + 1/8 sample, per ACK: a few per millisecond here.
                let sample = self.queue / self.capacity;
                self.srtt_queue += (sample - self.srtt_queue) * 0.3;
            }
            tokio::time::advance(TICK).await;
            let now = Instant::now();
            let sample = PathSample {
                delay: Some(Duration::from_secs_f64(self.srtt_queue) + self.srtt_offset),
                delivered: delivered as u64,
                backlogged: true,
                answers_arriving: false,
            };
            let rate = self.pacer.observe(now, TARGET, FLOOR, sample);
            steps.push(Step {
                at: now - self.start,
                delay: Duration::from_secs_f64(self.queue / self.capacity),
                goodput: delivered / TICK.as_secs_f64(),
                rate,
            });
        }
        steps
    }
}

fn goodput(steps: &[Step]) -> f64 {
    steps.iter().map(|s| s.goodput).sum::<f64>() / steps.len() as f64
}

fn delay_p99(steps: &[Step]) -> Duration {
    let mut d: Vec<Duration> = steps.iter().map(|s| s.delay).collect();
    d.sort_unstable();
    d[(d.len() as f64 * 0.99) as usize - 1]
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_is_drained_and_kept_near_the_target_with_the_link_busy() {
    let mut link = Link::new(100.0 * MBIT);
    let first = link.run(2.0).await;
    assert!(
        first.iter().any(|s| s.rate.is_some()),
        "the pacer never paced"
    );
    let steady = link.run(20.0).await;
    let p99 = delay_p99(&steady);
    let share = goodput(&steady) / link.capacity;
    // Unpaced, this sender keeps the 50 ms buffer full.
    assert!(p99 <= TARGET * 2, "queue p99 {p99:?}");
    assert!(share >= 0.93, "the link was busy {share:.3} of the time");
}

#[tokio::test(start_paused = true)]
async fn halved_capacity_is_found_within_a_second_and_restored_capacity_within_ten() {
    let mut link = Link::new(100.0 * MBIT);
    link.run(10.0).await;
    link.capacity /= 2.0;
    let after_halving = link.run(10.0).await;
    let settled = after_halving
        .iter()
        .rposition(|s| s.delay > TARGET * 2)
        .map_or(Duration::ZERO, |i| {
            after_halving[i].at - after_halving[0].at
        });
    assert!(
        settled < Duration::from_secs(1),
        "queue above 2× target until {settled:?}"
    );
    let share = goodput(&after_halving[50..]) / link.capacity;
    assert!(share >= 0.93, "half link busy {share:.3}");

    link.capacity *= 2.0;
    let restored = link.run(10.0).await;
    let last_seconds = &restored[restored.len() - 100..];
    let share = goodput(last_seconds) / link.capacity;
    assert!(share >= 0.9, "restored link busy {share:.3} after 8 s");
    assert!(
        delay_p99(&restored) <= TARGET * 3,
        "{:?}",
        delay_p99(&restored)
    );
}

#[tokio::test(start_paused = true)]
async fn an_uncongested_path_is_never_paced() {
    let mut link = Link::new(10_000.0 * MBIT);
    link.greedy = 100.0 * MBIT; // the sender, not the path, is the limit
    let steps = link.run(10.0).await;
    assert!(
        steps.iter().all(|s| s.rate.is_none()),
        "paced without a queue"
    );
}

#[tokio::test(start_paused = true)]
async fn the_rate_never_falls_below_the_floor_and_a_pause_keeps_the_cap_only_for_a_while() {
    let start = Instant::now();
    let mut pacer = Pacer::with_timing(start, STANDING_QUEUE, RESUME_MEMORY);
    let mut lowest = u64::MAX;
    for i in 1..=200 {
        tokio::time::advance(TICK).await;
        // A path that stays queued whatever we do (someone else fills it).
        let sample = PathSample {
            delay: Some(Duration::from_millis(40)),
            delivered: if i < 5 { 250_000 } else { 1_000 },
            backlogged: true,
            answers_arriving: false,
        };
        if let Some(rate) = pacer.observe(Instant::now(), TARGET, FLOOR, sample) {
            lowest = lowest.min(rate);
        }
    }
    assert_eq!(lowest, FLOOR, "the rate went to {lowest}");
    let idle = PathSample {
        delay: None,
        delivered: 0,
        backlogged: false,
        answers_arriving: false,
    };
    tokio::time::advance(TICK).await;
    // The cap kept is the last one the path was really sending at (the first cut), not the
    // floor that a cap which no longer bound was cut to.
    let kept = pacer.observe(Instant::now(), TARGET, FLOOR, idle);
    assert!(
        kept > Some(FLOOR),
        "a pause keeps the cap for the next burst: {kept:?}"
    );
    // Then the next burst would measure the path again, paced a little above what it
    // carried; after as long again, it would go out unpaced.
    tokio::time::advance(RESUME_MEMORY).await;
    let probe = pacer.observe(Instant::now(), TARGET, FLOOR, idle);
    assert!(
        probe > kept,
        "a measuring burst is paced above the kept cap: {probe:?}"
    );
    tokio::time::advance(RESUME_MEMORY).await;
    assert_eq!(pacer.observe(Instant::now(), TARGET, FLOOR, idle), None);
}

/// Answers in bursts: `size` bytes every `every` across a link of `capacity` with a 50 ms
/// buffer. A burst that starts unpaced puts a congestion window's worth (`window`) in the
/// queue at once, as a TCP sender after a pause does, then sends 25 % faster than the link;
/// a paced one sends at the cap from its first byte. Returns one step per tick.
async fn bursts(
    pacer: &mut Pacer,
    capacity: f64,
    size: f64,
    every: Duration,
    secs: f64,
) -> Vec<Step> {
    let window: f64 = 140_000.0;
    let start = Instant::now();
    let (mut queue, mut srtt_queue, mut left) = (0.0f64, 0.0f64, 0.0f64);
    let mut fresh = false;
    let mut steps = Vec::new();
    let every_ms = every.as_millis() as usize;
    let mut ms = 0usize;
    for _ in 0..(secs / TICK.as_secs_f64()).round() as usize {
        let mut delivered = 0.0;
        for _ in 0..TICK.as_millis() {
            if ms.is_multiple_of(every_ms) {
                left = size;
                fresh = true;
            }
            ms += 1;
            let mut send = match pacer.rate() {
                Some(rate) => (rate as f64 / 1000.0).min(left),
                None if fresh => window.min(left),
                None => (capacity * 1.25 / 1000.0).min(left),
            };
            fresh = false;
            send = send.min(capacity * 0.050 - queue).max(0.0);
            left -= send;
            queue += send;
            let out = queue.min(capacity / 1000.0);
            queue -= out;
            delivered += out;
            srtt_queue += (queue / capacity - srtt_queue) * 0.3;
        }
        tokio::time::advance(TICK).await;
        let now = Instant::now();
        let sample = PathSample {
            delay: (delivered > 0.0).then(|| Duration::from_secs_f64(srtt_queue)),
            delivered: delivered as u64,
            backlogged: left > 0.0 || queue > 0.0,
            answers_arriving: false,
        };
        let rate = pacer.observe(now, TARGET, FLOOR, sample);
        steps.push(Step {
            at: now - start,
            delay: Duration::from_secs_f64(queue / capacity),
            goodput: delivered / TICK.as_secs_f64(),
            rate,
        });
    }
    steps
}

#[tokio::test(start_paused = true)]
async fn bursts_after_a_paced_one_start_paced_and_put_no_window_in_the_queue() {
    let capacity = 100.0 * MBIT;
    let mut pacer = Pacer::with_timing(Instant::now(), STANDING_QUEUE, RESUME_MEMORY);
    let (size, every) = (1_700_000.0, Duration::from_millis(700));
    let first = bursts(&mut pacer, capacity, size, every, 0.7).await;
    let spike = first.iter().map(|s| s.delay).max().unwrap();
    assert!(spike > TARGET * 2, "the first burst's window: {spike:?}");
    assert!(
        pacer.rate().is_some(),
        "the pause after a paced burst keeps its cap"
    );
    let later = bursts(&mut pacer, capacity, size, every, 7.0).await;
    let worst = later.iter().map(|s| s.delay).max().unwrap();
    assert!(worst <= TARGET * 2, "a later burst queued {worst:?}");
    // Every burst still crosses before the next one starts (the answers are not starved).
    let carried = goodput(&later) * 7.0;
    assert!(
        carried >= 0.99 * size * 10.0,
        "carried {carried:.0} of {}",
        size * 10.0
    );
    // Once the bursts stop, the cap is kept for the memory (and a measuring burst's for as
    // long again) and then lifted.
    let mut idle = Pacer::new(Instant::now());
    std::mem::swap(&mut idle, &mut pacer);
    let quiet = bursts(&mut idle, capacity, 0.0, Duration::from_secs(60), 13.0).await;
    assert!(quiet[10].rate.is_some());
    assert_eq!(
        quiet.last().unwrap().rate,
        None,
        "still capped after the memory"
    );
}

#[tokio::test(start_paused = true)]
async fn when_the_memory_ends_a_burst_measures_paced_and_finds_a_path_that_grew() {
    let capacity = 100.0 * MBIT;
    let mut pacer = Pacer::with_timing(Instant::now(), STANDING_QUEUE, RESUME_MEMORY);
    let (size, every) = (1_700_000.0, Duration::from_millis(700));
    bursts(&mut pacer, capacity, size, every, 0.7).await;
    let first = pacer.rate().expect("the first burst measured a rate") as f64;
    // Past two memories on the same path: each measuring burst starts paced, so none puts a
    // congestion window in the queue (an unpaced one did: the first burst's spike).
    let later = bursts(&mut pacer, capacity, size, every, 24.5).await;
    let worst = later.iter().map(|s| s.delay).max().unwrap();
    assert!(worst <= TARGET * 2, "a measuring burst queued {worst:?}");
    let same = pacer.rate().expect("still paced") as f64;
    assert!(
        (0.85..=1.25).contains(&(same / first)),
        "the same path measured {same:.0} after {first:.0}"
    );
    // The path doubles: each measuring burst finds a tenth more room.
    let grown = bursts(&mut pacer, capacity * 2.0, size, every, 24.5).await;
    let worst = grown.iter().map(|s| s.delay).max().unwrap();
    assert!(worst <= TARGET * 2, "{worst:?}");
    let now = pacer.rate().expect("still paced") as f64;
    assert!(
        now >= same * 1.15,
        "rate {now:.0} after {same:.0} on a doubled path"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cap_that_no_longer_binds_is_lifted() {
    let mut link = Link::new(100.0 * MBIT);
    link.run(3.0).await;
    assert!(link.pacer.rate().is_some());
    // The uploads thin out: the sender wants a tenth of the link.
    link.greedy = 10.0 * MBIT;
    let steps = link.run(15.0).await;
    assert_eq!(steps.last().unwrap().rate, None, "still paced");
    assert!(goodput(&steps[steps.len() - 50..]) >= 0.99 * link.greedy);
}

fn path(srtt_us: u64, min_rtt_us: u64) -> TcpPath {
    TcpPath {
        srtt: Duration::from_micros(srtt_us),
        min_rtt: Duration::from_micros(min_rtt_us),
        bytes_acked: 0,
        bytes_received: 0,
        backlog: 0,
        max_pacing_rate: u64::MAX,
    }
}

#[test]
fn the_delay_is_the_fresh_connections_median_above_the_paths_least_round_trip() {
    let quiet = path(900, 150); // the realtime connection: stale, but it saw the least RTT
    let a = path(5_150, 300);
    let b = path(7_150, 400);
    let c = path(30_150, 200); // one in loss recovery: the median ignores it
    assert_eq!(
        queueing_delay(&[quiet, a, b, c], &[a, b, c]),
        Some(Duration::from_millis(7))
    );
    assert_eq!(
        queueing_delay(&[quiet, a, b], &[a, b]),
        Some(Duration::from_millis(6))
    );
    assert_eq!(queueing_delay(&[quiet, a], &[]), None, "nothing fresh");
    assert_eq!(queueing_delay(&[], &[]), None);
}

#[tokio::test(start_paused = true)]
async fn a_queue_on_the_way_back_does_not_starve_the_lane() {
    // Compute's answers queue on the return path in bursts: the round trips the pacer reads
    // jump by 10 ms for 140 ms, a few times a second, whatever the lane sends.
    let mut link = Link::new(100.0 * MBIT);
    link.run(3.0).await;
    let mut steps = Vec::new();
    for burst in 0..40 {
        link.srtt_offset = Duration::from_millis(10);
        steps.extend(link.run(0.14).await);
        link.srtt_offset = Duration::ZERO;
        steps.extend(link.run(if burst % 2 == 0 { 0.3 } else { 0.5 }).await);
    }
    let share = goodput(&steps) / link.capacity;
    assert!(share >= 0.85, "the link was busy {share:.3} of the time");
    assert!(delay_p99(&steps) <= TARGET * 2, "{:?}", delay_p99(&steps));
}

#[tokio::test(start_paused = true)]
async fn round_trips_taken_while_answers_stream_in_do_not_cut_the_rate() {
    let mut link = Link::new(100.0 * MBIT);
    link.run(3.0).await;
    let before = link.pacer.rate().expect("paced by now");
    tokio::time::advance(TICK).await;
    let sample = PathSample {
        delay: Some(Duration::from_millis(15)),
        delivered: (before as f64 * TICK.as_secs_f64()) as u64,
        backlogged: true,
        answers_arriving: true,
    };
    let after = link
        .pacer
        .observe(Instant::now(), TARGET, FLOOR, sample)
        .expect("still paced");
    assert!(after >= before, "cut from {before} to {after}");
}

#[tokio::test]
async fn the_driver_shares_the_rate_over_the_connections_with_bytes_to_send() {
    use std::io::Write;
    // Two connections of the yielding lane to one address, whose peer reads nothing: their
    // bytes stay queued (backlogged), as an upload's do on a slow path.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let own = Arc::new(SocketRegistry::default());
    let protected = SocketRegistry::default();
    let mut streams = Vec::new();
    let mut registrations = Vec::new();
    for _ in 0..2 {
        let mut client = std::net::TcpStream::connect(&address).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        while client.write(&[1u8; 65536]).is_ok() {}
        registrations.push(own.register(address.clone(), std::os::fd::AsRawFd::as_raw_fd(&client)));
        streams.push((client, server));
    }
    let mut paths = PacedPaths::default();
    let settings = Yielding {
        target: TARGET,
        floor: FLOOR,
        quiet_below: Some(ANSWER_BYTES_PER_TICK),
        key: "test",
        standing: STANDING_QUEUE,
        memory: RESUME_MEMORY,
        // The test's path is loopback; the rule that skips those is tested on its own.
        skip_loopback: false,
    };
    let now = Instant::now();
    let (rate, _) = paths.tick(&own, Some(&protected), now, settings);
    assert_eq!(rate, 0, "nothing measured yet: not paced");
    // The endpoint's pacer has cut to 4 MB/s and holds it.
    let state = paths.paths.get_mut(&address).expect("the path is tracked");
    state.pacer.rate = Some(4_000_000.0);
    state.pacer.hold_until = now + Duration::from_secs(60);
    let (rate, _) = paths.tick(&own, Some(&protected), now + TICK, settings);
    assert_eq!(rate, 4_000_000);
    for (client, _) in &streams {
        let path = crate::sockopt::tcp_path(std::os::fd::AsFd::as_fd(client)).unwrap();
        assert!(path.backlog > 0, "{path:?}");
        assert_eq!(path.max_pacing_rate, 2_000_000, "half the rate each");
    }
    // A closed connection leaves the registry with its stream.
    drop(registrations.pop());
    assert_eq!(own.with_open(|open| open.len()), 1);
}

#[tokio::test(start_paused = true)]
async fn short_delay_spikes_of_a_busy_host_start_no_pacing() {
    // A busy host: the round trips jump to 5 ms for a tick (the receiver was not scheduled),
    // then fall back; nothing queues.
    let mut pacer = Pacer::new(Instant::now());
    for i in 0..500 {
        tokio::time::advance(TICK).await;
        let spike = i % 3 == 0;
        let sample = PathSample {
            delay: Some(Duration::from_millis(if spike { 5 } else { 1 })),
            delivered: 2_000_000,
            backlogged: true,
            answers_arriving: false,
        };
        assert_eq!(
            pacer.observe(Instant::now(), TARGET, FLOOR, sample),
            None,
            "tick {i}"
        );
    }
}

#[test]
fn loopback_paths_are_recognised_in_every_form_an_address_takes() {
    for a in [
        "127.0.0.1:50051",
        "127.0.0.1",
        "[::1]:50051",
        "::1",
        "localhost:50051",
    ] {
        assert!(is_loopback(a), "{a}");
    }
    for a in [
        "10.203.0.2:50051",
        "10.203.0.2",
        "compute:50051",
        "[fd00::1]:50051",
    ] {
        assert!(!is_loopback(a), "{a}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_lane_cuts_for_a_queue_it_builds_while_delivering_nearly_its_rate() {
    // Paced 1.5 % above the link: it delivers 98.5 % of its rate, and the queue grows slowly.
    // A lane, which decides nothing while its answers stream in, knows a standing queue is
    // its own and cuts once it has stood; compute, which cannot tell its way back is busy,
    // goes on until it delivers clearly less than its rate.
    for watches in [false, true] {
        let mut link = Link::new(100.0 * MBIT);
        link.pacer = Pacer::new(link.start).watching_way_back(watches);
        link.run(3.0).await;
        let before = link.pacer.rate().expect("paced by now");
        let mut cut_after = None;
        for tick in 1..=4 {
            tokio::time::advance(TICK).await;
            let sample = PathSample {
                delay: Some(Duration::from_millis(5)),
                delivered: (before as f64 * 0.985 * TICK.as_secs_f64()) as u64,
                backlogged: true,
                answers_arriving: false,
            };
            let rate = link.pacer.observe(Instant::now(), TARGET, FLOOR, sample);
            if rate < Some(before) && cut_after.is_none() {
                cut_after = Some(tick);
            }
        }
        if watches {
            // Over the target from the first tick; standing after STANDING_QUEUE (two more).
            assert_eq!(cut_after, Some(3), "a lane at {before}");
        } else {
            assert_eq!(cut_after, None, "compute at {before}");
        }
    }
}
