//! Privileges: what anypop needs of the kernel, checked up front with a message that says what
//! is missing — rather than a bare EPERM from the first syscall that needs it. Root has them
//! all; a service manager can grant just these (the systemd unit does).
use anyhow::bail;

/// A capability by number (linux/capability.h) and name.
pub struct Cap(pub u32, pub &'static str);

pub const CAP_NET_ADMIN: Cap = Cap(12, "CAP_NET_ADMIN");
pub const CAP_SYS_ADMIN: Cap = Cap(21, "CAP_SYS_ADMIN");
pub const CAP_BPF: Cap = Cap(39, "CAP_BPF");

/// What the data plane's daemon needs: load programs and maps (CAP_BPF), attach them to
/// interfaces and add VIPs (CAP_NET_ADMIN), and find programs by id to check what a pinned
/// link runs before replacing it (CAP_SYS_ADMIN: BPF_PROG_GET_FD_BY_ID).
pub const DAEMON: &[Cap] = &[CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN];

/// The effective capability set of this process.
fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Fails, naming what is missing, unless this process has every capability of `needed`;
/// `what` says what the command does with them.
pub fn require(needed: &[Cap], what: &str) -> anyhow::Result<()> {
    let eff = effective();
    let missing: Vec<&str> = needed
        .iter()
        .filter(|c| eff & (1u64 << c.0) == 0)
        .map(|c| c.1)
        .collect();
    if !missing.is_empty() {
        bail!(
            "{what}: run it as root (or grant {}; missing here: {})",
            needed.iter().map(|c| c.1).collect::<Vec<_>>().join(" + "),
            missing.join(", ")
        );
    }
    Ok(())
}
