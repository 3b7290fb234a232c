//! The CPU time slice a worker asks the scheduler for.
//!
//! A worker sleeps in the kernel until a completion wakes it, works
//! through a batch and sleeps again. Its wake-ups are the latency of every
//! packet it carries. On a busy host the thread it wakes beside (iperf3, a
//! database, the other gateway on a shared machine) holds the CPU for the
//! rest of its own slice, 0.75 ms times a factor of the CPU count by
//! default. The packet waits that long. Linux's EEVDF scheduler (6.12 and
//! later) lets a thread ask for a shorter slice with `sched_setattr`
//! (`sched_runtime` of a normal thread). It gives no more CPU: the thread
//! gets an earlier deadline, so it runs soon after it wakes, and it is
//! preempted sooner. That is a worker's pattern. It needs no privilege, and
//! it keeps the thread's nice value. Older kernels ignore the request.

use std::io;
use std::time::Duration;

/// The slice a worker asks for unless told otherwise: the shortest the
/// kernel grants. On this project's two-CPU bench it cut the loaded round
/// trip's p99 in vxlan mode by about a fifth and evened out the idle round
/// trip between labs, with throughput unchanged.
pub const DEFAULT_SLICE: Duration = Duration::from_micros(100);
/// The shortest slice the kernel grants.
pub const MIN_SLICE: Duration = Duration::from_micros(100);
/// The longest slice the kernel grants.
pub const MAX_SLICE: Duration = Duration::from_millis(100);

/// `struct sched_attr` (`include/uapi/linux/sched/types.h`), up to the
/// utilisation clamps: the size the kernel has known since 5.3.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// `SCHED_OTHER`, the policy of a normal thread.
const SCHED_OTHER: u32 = 0;

/// Asks the scheduler to give the calling thread slices of `slice`
/// (clamped to [`MIN_SLICE`]..=[`MAX_SLICE`]), keeping its nice value. A
/// thread under a real-time or other policy is left alone, and
/// `Ok(false)` says so.
pub fn request(slice: Duration) -> io::Result<bool> {
    // SAFETY: sched_getscheduler only reads the calling thread's policy.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    if policy as u32 != SCHED_OTHER {
        return Ok(false);
    }
    // getpriority returns the nice value, and -1 is a valid one: tell an
    // error by errno, cleared first.
    // SAFETY: __errno_location points at this thread's errno.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: getpriority only reads; 0 with PRIO_PROCESS is the calling
    // thread on Linux.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let errno = io::Error::last_os_error();
    if nice == -1 && errno.raw_os_error() != Some(0) {
        return Err(errno);
    }
    let slice = slice.clamp(MIN_SLICE, MAX_SLICE);
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: SCHED_OTHER,
        flags: 0,
        nice,
        priority: 0,
        runtime: slice.as_nanos() as u64,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: `attr` is a valid sched_attr of the size it states, and
    // outlives the call; 0 is the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// The calling thread's slice as the scheduler's debug view shows it
/// (`se.slice` in `/proc/thread-self/sched`), when the kernel has one.
pub fn current() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
    let line = text.lines().find(|l| l.starts_with("se.slice"))?;
    let ns: u64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread of its own, so that the test harness's threads
    /// keep their slices.
    fn on_a_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("the thread ran")
    }

    /// Whether this kernel shows a thread's slice; if not, says why the
    /// test skips (a failure under `CI`).
    fn slices_visible() -> bool {
        if current().is_some() {
            return true;
        }
        let why = "/proc/thread-self/sched shows no se.slice (a kernel without EEVDF's debug view)";
        assert!(std::env::var_os("CI").is_none(), "skipped under CI: {why}");
        eprintln!("skipped: {why}");
        false
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_and_keeps_its_nice_value() {
        if !slices_visible() {
            return;
        }
        let (asked, got, nice_before, nice_after) = on_a_thread(|| {
            // Lowering priority needs no privilege.
            // SAFETY: setpriority on the calling thread.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 3) };
            // SAFETY: getpriority only reads.
            let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let asked = request(Duration::from_micros(300)).expect("sched_setattr");
            // SAFETY: getpriority only reads.
            let after = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            (asked, current(), before, after)
        });
        assert!(asked);
        assert_eq!(got, Some(Duration::from_micros(300)));
        assert_eq!((nice_before, nice_after), (3, 3), "the nice value stays");
    }

    #[test]
    fn a_slice_out_of_range_is_clamped_to_what_the_kernel_grants() {
        if !slices_visible() {
            return;
        }
        let got = on_a_thread(|| {
            request(Duration::from_micros(1)).expect("sched_setattr");
            let short = current();
            request(Duration::from_secs(1)).expect("sched_setattr");
            (short, current())
        });
        assert_eq!(got, (Some(MIN_SLICE), Some(MAX_SLICE)));
    }
}
