//! Operating-system knobs that have no safe wrapper in the crates we use: a socket's minimum
//! retransmission timeout, its TCP round-trip estimates (`TCP_INFO`) and pacing cap
//! (`SO_MAX_PACING_RATE`), and a thread's scheduling priority.
//!
//! Both are best effort: on a kernel or platform without them the call reports an error and
//! the caller carries on with the system default (logged once, never fatal).

use std::io;
use std::time::Duration;

/// `TCP_RTO_MIN_US` (Linux ≥ 6.15): this socket's floor for the retransmission timeout.
#[cfg(target_os = "linux")]
const TCP_RTO_MIN_US: libc::c_int = 45;

/// Lowers this socket's minimum retransmission timeout to `rto_min`.
///
/// Why: Linux waits at least 200 ms before it resends a lost segment that no later segment
/// reveals (the last packet of a small call has nothing after it to trigger a fast
/// retransmit). On a data-centre link whose round trip is well under a millisecond that floor
/// *is* the latency of every small call that loses a packet: `docs/benchmarks-hol.md` shows
/// it as the realtime lane's p99. `Duration::ZERO` leaves the kernel's default.
pub fn set_tcp_rto_min<S: std::os::fd::AsRawFd>(socket: &S, rto_min: Duration) -> io::Result<()> {
    if rto_min.is_zero() {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        let micros: libc::c_int = rto_min.as_micros().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: a valid fd owned by `socket`, a pointer to a c_int and its exact length.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                TCP_RTO_MIN_US,
                (&micros as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TCP_RTO_MIN_US is Linux-only",
        ))
    }
}

/// What the kernel knows about one TCP connection (the part of `TCP_INFO` the pacer reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPath {
    /// Smoothed round-trip time (`tcpi_rtt`).
    pub srtt: Duration,
    /// The least round trip seen in the kernel's window (`tcpi_min_rtt`, 5 minutes by
    /// default): the path with empty queues.
    pub min_rtt: Duration,
    /// Bytes the peer has acknowledged, since the connection opened.
    pub bytes_acked: u64,
    /// Bytes received from the peer, since the connection opened.
    pub bytes_received: u64,
    /// Bytes sent and not yet acknowledged, plus bytes written but not yet sent: the socket
    /// has something to deliver.
    pub backlog: u64,
    /// The pacing cap in force (`u64::MAX`: none).
    pub max_pacing_rate: u64,
}

/// `struct tcp_info` up to `tcpi_min_rtt` (Linux ≥ 4.9), laid out as in `<linux/tcp.h>`.
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct RawTcpInfo {
    state: [u8; 8],
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last: [u32; 4],
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
}

/// Reads a connection's round trips and delivery counters.
pub fn tcp_path(socket: std::os::fd::BorrowedFd<'_>) -> io::Result<TcpPath> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut info = RawTcpInfo::default();
        let mut len = std::mem::size_of::<RawTcpInfo>() as libc::socklen_t;
        // SAFETY: a valid fd, an out-pointer to a plain-old-data struct and its exact length;
        // the kernel writes at most `len` bytes and says how many.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut RawTcpInfo).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if (len as usize) < std::mem::size_of::<RawTcpInfo>() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel's TCP_INFO has no tcpi_min_rtt (Linux >= 4.9 needed)",
            ));
        }
        Ok(TcpPath {
            srtt: Duration::from_micros(info.rtt.into()),
            min_rtt: Duration::from_micros(info.min_rtt.into()),
            bytes_acked: info.bytes_acked,
            bytes_received: info.bytes_received,
            backlog: u64::from(info.unacked) * u64::from(info.snd_mss)
                + u64::from(info.notsent_bytes),
            max_pacing_rate: info.max_pacing_rate,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TCP_INFO round trips are Linux-only",
        ))
    }
}

/// Caps how fast the kernel sends on this socket (`SO_MAX_PACING_RATE`, bytes per second;
/// `None` lifts the cap). TCP paces by itself once a cap is set (Linux ≥ 4.13 paces inside
/// TCP; with the `fq` qdisc, fq does).
pub fn set_max_pacing_rate(
    socket: std::os::fd::BorrowedFd<'_>,
    bytes_per_second: Option<u64>,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // Not in the libc crate's Linux module; <asm-generic/socket.h> (sparc has its own).
        const SO_MAX_PACING_RATE: libc::c_int = if cfg!(target_arch = "sparc64") {
            0x31
        } else {
            47
        };
        // The 64-bit form (Linux ≥ 4.20); `!0` is "no cap".
        let rate: u64 = bytes_per_second.unwrap_or(u64::MAX);
        // SAFETY: a valid fd, a pointer to a u64 and its exact length.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_MAX_PACING_RATE,
                (&rate as *const u64).cast(),
                std::mem::size_of::<u64>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, bytes_per_second);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_MAX_PACING_RATE is Linux-only",
        ))
    }
}

/// Sets the calling thread's nice value (higher = lower priority).
///
/// Why: compute's CPU pool runs image work that may take seconds; its gRPC I/O threads answer
/// health checks and stream bytes. At a lower priority the pool yields the core to the I/O
/// threads the moment they wake, so a busy compute still answers small calls at once.
pub fn set_current_thread_nice(nice: i32) -> io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        // On Linux, PRIO_PROCESS with a thread id applies to that thread alone.
        // SAFETY: plain syscalls with integer arguments.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "per-thread nice is Linux-only",
        ))
    }
}

/// Logs a best-effort knob's failure once per process and knob, at warn level.
pub fn warn_once(once: &'static std::sync::Once, what: &str, err: &io::Error) {
    once.call_once(
        || tracing::warn!(error = %err, "{what} not applied; the system default stays in force"),
    );
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn rto_min_is_set_on_a_socket_when_the_kernel_has_it() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        match set_tcp_rto_min(&socket, Duration::from_millis(20)) {
            Ok(()) => {
                let mut value: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: valid fd, out-pointer and length.
                let rc = unsafe {
                    libc::getsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&socket),
                        libc::IPPROTO_TCP,
                        TCP_RTO_MIN_US,
                        (&mut value as *mut libc::c_int).cast(),
                        &mut len,
                    )
                };
                assert_eq!(rc, 0);
                assert_eq!(value, 20_000);
            }
            // Older kernels: the option does not exist; the error must say so, not panic.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT), "{e}"),
        }
        set_tcp_rto_min(&socket, Duration::ZERO).unwrap();
    }

    #[test]
    fn tcp_info_reads_a_live_connection_and_the_pacing_cap_is_set_and_lifted() {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(&[7u8; 100_000]).unwrap();
        let mut got = vec![0u8; 100_000];
        server.read_exact(&mut got).unwrap();
        let path = tcp_path(client.as_fd()).unwrap();
        // The SYN counts as one acknowledged byte.
        assert!((100_000..=100_001).contains(&path.bytes_acked), "{path:?}");
        assert!(
            path.min_rtt > Duration::ZERO && path.srtt >= path.min_rtt,
            "{path:?}"
        );
        assert_eq!(path.backlog, 0, "{path:?}");
        assert_eq!(path.max_pacing_rate, u64::MAX, "no cap until one is set");

        set_max_pacing_rate(client.as_fd(), Some(1_250_000)).unwrap();
        assert_eq!(tcp_path(client.as_fd()).unwrap().max_pacing_rate, 1_250_000);
        set_max_pacing_rate(client.as_fd(), None).unwrap();
        assert_eq!(tcp_path(client.as_fd()).unwrap().max_pacing_rate, u64::MAX);
    }

    #[test]
    fn a_thread_can_lower_its_own_priority() {
        std::thread::spawn(|| {
            set_current_thread_nice(3).unwrap();
            // SAFETY: plain syscalls.
            let nice = unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            };
            assert!(nice >= 3, "nice {nice}");
        })
        .join()
        .unwrap();
    }
}
