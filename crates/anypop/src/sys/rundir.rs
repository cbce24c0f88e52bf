//! A node daemon's runtime directory under /run/anypop: its lock (one daemon per node), its control
//! socket, and the record of what it changed on the machine outside bpffs (VIPs added to `lo`),
//! which outlives the daemon so that a later stop or `anypop down` can undo it.
use std::{
    fs::File,
    io::{Read, Seek, Write},
    net::Ipv4Addr,
    os::{fd::AsRawFd, unix::fs::DirBuilderExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use crate::sys::paths::remove_below;

/// Where every daemon's runtime directory lives.
pub const RUN_BASE: &str = "/run/anypop";

/// The runtime directory of the daemon that owns `pin_dir` (bpffs holds only BPF objects, so the
/// lock, socket and records live under /run, named after the pin directory).
pub fn run_dir(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    PathBuf::from(RUN_BASE).join(name)
}

/// The control socket of the daemon that owns `pin_dir`.
pub fn socket_path(pin_dir: &Path) -> PathBuf {
    run_dir(pin_dir).join("control.sock")
}

/// One daemon per node: an exclusive open-file-description lock on `daemon.pid` in its
/// [`run_dir`], held for the life of the process (the kernel releases it however the process
/// ends: no stale lock). Others *test* the lock without taking it ([`running_pid`]), so a
/// `status` never makes a starting daemon fail.
pub struct DaemonLock {
    _file: File,
    dir: PathBuf,
}

impl Drop for DaemonLock {
    fn drop(&mut self) {
        for f in ["control.sock", "daemon.pid"] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        // Empty unless a record (VIPs left for a running data plane) must outlive us.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `fcntl` lock request on the whole file.
fn whole_file_lock(kind: libc::c_short) -> libc::flock {
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

impl DaemonLock {
    pub fn acquire(pin_dir: &Path, node: &str) -> anyhow::Result<DaemonLock> {
        let dir = run_dir(pin_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {} (are you root?)", dir.display()))?;
        let path = dir.join("daemon.pid");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let lock = whole_file_lock(libc::F_WRLCK as libc::c_short);
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &lock) } != 0 {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            bail!(
                "another anypop daemon (pid {}) already runs node {node}; stop it first (two daemons for one node would fight over its maps)",
                pid.trim()
            );
        }
        f.set_len(0)?;
        f.rewind()?;
        write!(f, "{}", std::process::id())?;
        Ok(DaemonLock { _file: f, dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The pid of the daemon that runs the node of `pin_dir`, if one does: the lock is held (a pid
/// file alone proves nothing — pids are reused).
pub fn running_pid(pin_dir: &Path) -> Option<u32> {
    let path = run_dir(pin_dir).join("daemon.pid");
    let mut f = File::open(&path).ok()?;
    let mut probe = whole_file_lock(libc::F_WRLCK as libc::c_short);
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) } != 0 {
        return None;
    }
    if probe.l_type == libc::F_UNLCK as libc::c_short {
        return None;
    }
    let mut pid = String::new();
    f.read_to_string(&mut pid).ok()?;
    pid.trim().parse().ok()
}

/// The VIPs anypop added to `lo` for the node of `pin_dir` (and that are to be removed when its
/// data plane goes): a record in its run directory, written the moment a VIP is added, so it
/// survives a crash of the daemon.
pub struct VipRecord {
    path: PathBuf,
}

impl VipRecord {
    pub fn of(pin_dir: &Path) -> VipRecord {
        VipRecord {
            path: run_dir(pin_dir).join("vips-added"),
        }
    }

    pub fn read(&self) -> Vec<Ipv4Addr> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Replaces the record (atomically: a crash leaves the old or the new one).
    pub fn write(&self, vips: &[Ipv4Addr]) -> anyhow::Result<()> {
        if vips.is_empty() {
            return remove_below(Path::new(RUN_BASE), &self.path);
        }
        let dir = self.path.parent().expect("in the run dir");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let text: String = vips.iter().map(|v| format!("{v}\n")).collect();
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .with_context(|| format!("recording the VIPs added to lo in {}", self.path.display()))
    }

    /// Adds `vip` to the record.
    pub fn add(&self, vip: Ipv4Addr) -> anyhow::Result<()> {
        let mut all = self.read();
        if !all.contains(&vip) {
            all.push(vip);
            self.write(&all)?;
        }
        Ok(())
    }

    /// Removes `vip` from the record.
    pub fn forget(&self, vip: Ipv4Addr) -> anyhow::Result<()> {
        let all: Vec<Ipv4Addr> = self.read().into_iter().filter(|v| *v != vip).collect();
        self.write(&all)
    }
}
