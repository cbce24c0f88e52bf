//! Where the benchmark's threads run: namespace entry for the worker thread, CPU pinning and
//! real-time policies, the NAPI threads of the veth pair, and the idle spinner that keeps the
//! DUT's CPU awake. Kept apart because every figure depends on this placement being right.
use anyhow::{Context, bail};

use crate::lab::netns::run_cmd;

/// Moves the calling thread into a named namespace (commands it spawns follow it).
pub(super) fn enter(ns: &str) -> anyhow::Result<()> {
    crate::sys::testns::enter_named_netns(ns).with_context(|| format!("entering namespace {ns}"))
}

/// Pins a thread (0: the calling one) to one CPU.
pub(super) fn pin(tid: i32, cpu: usize) -> anyhow::Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity({tid}, cpu {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Gives a thread a scheduling policy (SCHED_FIFO with priority 1, or SCHED_IDLE with 0).
pub(super) fn policy(tid: i32, policy: i32, priority: i32) -> anyhow::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
        bail!(
            "sched_setscheduler({tid}, {policy}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A SCHED_IDLE thread spinning on the DUT's CPU so that the CPU never halts. Without it every
/// batch of 64 frames wakes the DUT's NAPI thread on a halted virtual CPU, which costs a VM exit
/// and a wake-up on the host: long enough for the generator to overflow the 256-frame veth ring
/// even when the DUT has time to spare. SCHED_IDLE gives way at once to the NAPI thread or
/// anything else that wants the CPU, and its time is not the DUT's.
pub(super) struct Spinner {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    pub(super) fn start(cpu: usize) -> Spinner {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            if pin(0, cpu).is_err() || policy(0, libc::SCHED_IDLE, 0).is_err() {
                return;
            }
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        Spinner {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Kernel threads whose name starts with `prefix` (NAPI threads are `napi/<ifname>-<id>`).
fn threads_named(prefix: &str) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
            {
                out.push(pid);
            }
        }
    }
    out
}

/// Switches an interface's NAPI to a kernel thread of its own and returns that thread. sysfs
/// shows the namespace it was mounted in, so the write goes through `ip netns exec` (which
/// mounts a sysfs for the namespace; no bpffs is involved).
pub(super) fn threaded_napi(ns: &str, ifname: &str) -> anyhow::Result<i32> {
    let prefix = format!("napi/{ifname}-");
    let before = threads_named(&prefix);
    run_cmd(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{ifname}/threaded"),
    ])?;
    let new: Vec<i32> = threads_named(&prefix)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    match new[..] {
        [tid] => Ok(tid),
        _ => bail!("expected one new NAPI thread for {ifname}, found {new:?}"),
    }
}

/// CPU time a thread has run, in seconds (first field of schedstat, ns).
pub(super) fn cpu_secs(tid: i32) -> f64 {
    std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0) as f64
        / 1e9
}
