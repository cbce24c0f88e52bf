//! Network namespaces for the lab, the demo and the tests: created with unique names, entered with
//! `setns` from a thread of our own (never `ip netns exec`, which remounts /sys and hides bpffs),
//! and always deleted again — by `Drop`, and at start-up for leftovers of runs that died.
use std::{
    fs::File,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::Context;

use crate::sys::testns::{NetSetup, enter_named_netns};

/// Prefix of every namespace we create: `ap-<pid>-<seq>-<role>`.
const PREFIX: &str = "ap-";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A named network namespace that is deleted when dropped.
pub struct Netns {
    pub name: String,
}

pub use crate::sys::testns::run_cmd;

impl Netns {
    /// Creates `ap-<pid>-<seq>-<role>`.
    pub fn new(role: &str) -> anyhow::Result<Netns> {
        let name = format!(
            "{PREFIX}{}-{}-{role}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run_cmd(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        self.spawn(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }

    /// Spawns a thread that stays in this namespace (for long-running work); the caller joins it.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>> {
        let name = self.name.clone();
        Ok(std::thread::spawn(move || {
            enter_named_netns(&name).with_context(|| format!("entering namespace {name}"))?;
            Ok(f())
        }))
    }

    /// Applies `setup` inside this namespace.
    pub fn apply(&self, setup: NetSetup) -> anyhow::Result<()> {
        Ok(self.run(move || setup.apply())??)
    }

    /// A command that runs inside this namespace: the child enters it with `setns` between fork
    /// and exec, so, unlike `ip netns exec`, it sees the same /sys and bpffs as we do (a daemon's
    /// pins stay where the lab can read them). The child gets SIGTERM when the thread that
    /// spawned it dies.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> anyhow::Result<Command> {
        use std::os::unix::process::CommandExt;
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let mut cmd = Command::new(program);
        // SAFETY: setns is async-signal-safe; the closure touches nothing but the fd it owns.
        unsafe {
            cmd.pre_exec(move || {
                // A lab killed outright must not leave its daemons running.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Runs a command inside the namespace (spawned from a thread that entered it, so /sys and
    /// bpffs stay as they are).
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = self.run(move || {
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            run_cmd(&refs)
        })?;
        Ok(out?)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair between two namespaces: `a_if` in `a`, `b_if` in `b`, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> anyhow::Result<()> {
    run_cmd(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ])?;
    a.exec(&["ip", "link", "set", a_if, "up"])?;
    b.exec(&["ip", "link", "set", b_if, "up"])?;
    Ok(())
}

/// Whether `name` is `<prefix><pid>-…` for a process that no longer exists (not us).
pub fn owned_by_dead_process(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let pid: u32 = rest
        .split('-')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pid != 0 && pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces left behind by earlier runs whose process is gone.
pub fn remove_leftovers() {
    let Ok(out) = run_cmd(&["ip", "netns", "list"]) else {
        return;
    };
    for line in out.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if owned_by_dead_process(name, PREFIX) {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
