//! Two operating-system knobs that have no safe wrapper in the crates we use: a socket's
//! minimum retransmission timeout, and a thread's scheduling priority.
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
