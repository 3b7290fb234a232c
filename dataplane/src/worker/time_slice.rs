//! The CPU time slice a worker asks the scheduler for, and when it gives
//! the rest of one back.
//!
//! A worker sleeps in the kernel until a completion wakes it, works
//! through a batch and sleeps again. Its wake-ups are the latency of every
//! packet it carries. On a busy host the thread it wakes beside (iperf3, a
//! database, the other gateway on a shared machine) may hold the CPU for
//! the rest of its own slice: the kernel's base slice (0.7 ms on the
//! bench machine) times a factor of the CPU count. The packet waits that
//! long. Linux's EEVDF scheduler (6.12 and later) lets a thread ask for a
//! shorter slice with `sched_setattr` (`sched_runtime` of a thread in the
//! fair class). Its share of the CPU stays the same: it gets an earlier
//! deadline, so it runs soon after it wakes, and it is preempted sooner.
//! That is a worker's pattern. The other threads on its CPU are preempted
//! more often too, which costs them some cache. It needs no privilege,
//! and the thread's nice value and policy stay. Older kernels accept the
//! request and ignore it.
//!
//! A short slice is not enough on its own. A worker with a backlog does
//! not sleep between its looks at the ring, and a kernel built without
//! full preemption (`PREEMPT_NONE`, the bench machine's, common on
//! servers) notices that its slice ran out only at a tick (every 4 ms at
//! 250 Hz) or when a woken thread's deadline is earlier than its own. A
//! woken worker of the other gateway, or the application whose packet it
//! carries, has no earlier deadline than a busy worker with the same
//! slice, and waited behind it for 0.6 to 1 ms at a time. So a worker
//! notices for itself: once it has run for [`GIVE_WAY_AFTER`] since it
//! last slept or gave way, it [`give_way`]s after its next enter, with the
//! last batch's sends and writes on their way ([`GiveWay`] keeps the
//! time). Under EEVDF `sched_yield` moves its deadline one slice later, so
//! whatever woke on its CPU runs first; with nothing else to run it
//! returns at once, for the cost of a system call (about 0.3 µs). Each
//! yield to another busy thread costs both some cache: yielding at every
//! look (every budget, 64 KiB each way) or every 100 µs cost four streams
//! 8–19% of their throughput here, every 200 µs 2–3%, and every 400 µs
//! bought no more throughput but gave back a third of the gain in loaded
//! p99. Counting the waits that found completions ready as running, as
//! here, yields more: loaded p99 0.6–0.8 ms against 1.6 without yielding,
//! loaded p50 15% higher, four streams 4–6% slower.

use std::io;
use std::time::{Duration, Instant};

/// The slice a worker asks for unless told otherwise: the shortest the
/// kernel grants (what it buys on the bench machine is in the README's
/// "Latency under load").
pub const DEFAULT_SLICE: Duration = Duration::from_micros(100);
/// How long a worker runs without sleeping before it gives way: twice the
/// default slice (the trade is in the module's notes).
pub const GIVE_WAY_AFTER: Duration = Duration::from_micros(200);
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

/// The fair-class policies, which take a slice: `SCHED_OTHER`,
/// `SCHED_BATCH`, `SCHED_IDLE`.
const FAIR_POLICIES: [u32; 3] = [0, 3, 5];
/// `SCHED_RESET_ON_FORK`, or-ed into the policy `sched_getscheduler`
/// returns.
const RESET_ON_FORK: u32 = 0x4000_0000;
/// `SCHED_FLAG_RESET_ON_FORK`: keeps that bit through `sched_setattr`.
const FLAG_RESET_ON_FORK: u64 = 0x01;

/// What came of asking for a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granted {
    /// The thread has the slice.
    Yes,
    /// The kernel accepted the request and kept its own slice (before
    /// Linux 6.12); known only where the kernel shows a thread's slice.
    Ignored,
    /// The thread runs under a real-time or deadline policy set from
    /// outside, which has no such slice; left alone.
    OtherPolicy,
}

/// Asks the scheduler to give the calling thread slices of `slice`
/// (clamped to [`MIN_SLICE`]..=[`MAX_SLICE`]), keeping its policy and nice
/// value.
pub fn request(slice: Duration) -> io::Result<Granted> {
    // SAFETY: sched_getscheduler only reads the calling thread's policy.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    let reset_on_fork = policy as u32 & RESET_ON_FORK != 0;
    let policy = policy as u32 & !RESET_ON_FORK;
    if !FAIR_POLICIES.contains(&policy) {
        return Ok(Granted::OtherPolicy);
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
        policy,
        flags: if reset_on_fork { FLAG_RESET_ON_FORK } else { 0 },
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
    Ok(match current() {
        Some(got) if got != slice => Granted::Ignored,
        _ => Granted::Yes,
    })
}

/// The calling thread's slice as the scheduler's debug view shows it
/// (`se.slice` in `/proc/thread-self/sched`), when the kernel has one.
pub fn current() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
    let line = text.lines().find(|l| l.starts_with("se.slice"))?;
    let ns: u64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Lets any thread that is ready to run on this CPU go first (see the
/// module's notes); returns at once when there is none.
pub fn give_way() {
    // SAFETY: sched_yield takes no argument and cannot fail on Linux.
    unsafe { libc::sched_yield() };
}

/// The calling thread's voluntary context switches so far (0 if the
/// kernel will not say): a wait that slept raised it.
pub fn voluntary_switches() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid for writes and outlives the call.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return 0;
    }
    u64::try_from(usage.ru_nvcsw).unwrap_or(0)
}

/// When a busy worker gives way: after running for `every`
/// ([`GIVE_WAY_AFTER`]) since it last slept or gave way. A wait on the
/// ring that found completions ready did not sleep, so the run goes on
/// through it. Sans-IO: the worker tells it the time and its voluntary
/// switch count.
#[derive(Clone, Copy, Debug)]
pub struct GiveWay {
    /// `None`: never (`--worker-yield off`).
    every: Option<Duration>,
    /// When the current run began.
    since: Instant,
    /// Voluntary switches as of the last wait.
    switches: u64,
}

impl GiveWay {
    /// Gives way after each `every` of running, or never.
    pub fn new(every: Option<Duration>, now: Instant) -> GiveWay {
        GiveWay {
            every,
            since: now,
            switches: 0,
        }
    }

    /// Whether it ever gives way (so the worker can skip the clock and
    /// the switch count when not).
    pub fn is_on(&self) -> bool {
        self.every.is_some()
    }

    /// The worker's wait on the ring returned at `now`, with `switches`
    /// voluntary switches so far: if it slept, its run starts afresh.
    pub fn waited(&mut self, now: Instant, switches: u64) {
        if switches != self.switches {
            self.switches = switches;
            self.since = now;
        }
    }

    /// Whether the worker, having just entered the ring at `now`, should
    /// give way before it works through what came; if so its next run
    /// starts now.
    pub fn due(&mut self, now: Instant) -> bool {
        match self.every {
            Some(every) if now.saturating_duration_since(self.since) >= every => {
                self.since = now;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_worker_gives_way_once_per_interval_of_running() {
        let t0 = Instant::now();
        let us = |n| t0 + Duration::from_micros(n);
        let mut g = GiveWay::new(Some(Duration::from_micros(100)), t0);
        assert!(!g.due(us(40)));
        assert!(!g.due(us(99)));
        assert!(g.due(us(100)));
        // The run restarts at the yield.
        assert!(!g.due(us(150)));
        assert!(g.due(us(230)));
        // A wait that slept restarts it too.
        g.waited(us(300), 1);
        assert!(!g.due(us(390)));
        assert!(g.due(us(400)));
    }

    #[test]
    fn a_wait_that_did_not_sleep_is_part_of_the_run() {
        let t0 = Instant::now();
        let us = |n| t0 + Duration::from_micros(n);
        let mut g = GiveWay::new(Some(Duration::from_micros(100)), t0);
        g.waited(us(10), 5);
        assert!(!g.due(us(100)));
        // Completions were ready: no switch, the run goes on.
        g.waited(us(80), 5);
        assert!(g.due(us(110)));
    }

    #[test]
    fn a_thread_that_sleeps_counts_a_voluntary_switch() {
        let before = voluntary_switches();
        std::thread::sleep(Duration::from_millis(1));
        assert!(voluntary_switches() > before);
    }

    #[test]
    fn a_worker_told_not_to_never_gives_way() {
        let t0 = Instant::now();
        let mut g = GiveWay::new(None, t0);
        assert!(!g.is_on());
        assert!(!g.due(t0 + Duration::from_secs(10)));
    }

    /// Runs `f` on a thread of its own, so that the test harness's threads
    /// keep their slices.
    fn on_a_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("the thread ran")
    }

    /// Whether this kernel takes a slice and shows it (EEVDF's custom
    /// slices, Linux 6.12, and its debug view); if not, says why the test
    /// skips (a failure under `CI`).
    fn slices_work() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut v = release
            .trim()
            .split(['.', '-'])
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        let why = if (major, minor) < (6, 12) {
            format!(
                "kernel {} has no custom slices (Linux 6.12)",
                release.trim()
            )
        } else if current().is_none() {
            "/proc/thread-self/sched shows no se.slice".to_string()
        } else {
            return true;
        };
        assert!(std::env::var_os("CI").is_none(), "skipped under CI: {why}");
        eprintln!("skipped: {why}");
        false
    }

    fn nice() -> i32 {
        // SAFETY: getpriority only reads the calling thread's nice value.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_and_keeps_its_nice_value() {
        if !slices_work() {
            return;
        }
        let (granted, got, before, after) = on_a_thread(|| {
            // Lowering one's priority needs no privilege.
            let lower = (nice() + 3).min(19);
            // SAFETY: setpriority on the calling thread.
            let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, lower) };
            assert_eq!(r, 0, "setpriority: {}", io::Error::last_os_error());
            let before = nice();
            let granted = request(Duration::from_micros(300)).expect("sched_setattr");
            (granted, current(), before, nice())
        });
        assert_eq!(granted, Granted::Yes);
        assert_eq!(got, Some(Duration::from_micros(300)));
        assert_eq!(after, before, "the nice value stays");
    }

    #[test]
    fn a_slice_out_of_range_is_clamped_to_what_the_kernel_grants() {
        if !slices_work() {
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

    #[test]
    fn a_batch_thread_keeps_its_policy() {
        if !slices_work() {
            return;
        }
        let (granted, policy) = on_a_thread(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: sets the calling thread's own policy to SCHED_BATCH,
            // which needs no privilege; `param` outlives the call.
            let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
            assert_eq!(r, 0, "sched_setscheduler: {}", io::Error::last_os_error());
            let granted = request(Duration::from_micros(200)).expect("sched_setattr");
            // SAFETY: sched_getscheduler only reads.
            (granted, unsafe { libc::sched_getscheduler(0) })
        });
        assert_eq!(granted, Granted::Yes);
        assert_eq!(policy, libc::SCHED_BATCH);
    }
}
