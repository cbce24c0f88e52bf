//! Counters: rates between two readings (the readings themselves are `dataplane::counters`) and
//! the one-line summary the daemon logs every few seconds; `status` reads a node's pinned maps.
pub mod capture;
pub mod metrics;
pub mod status;
pub mod trace;

use std::{borrow::Cow, path::Path};

use anyhow::bail;
use anypop_common::verdict::Reason;
use aya::maps::MapData;

pub use crate::dataplane::counters::{Snapshot, sum_per_cpu};

/// A name from a network file, an interface or the kernel, safe to print on a terminal or in a
/// capture comment: control characters (a newline that forges a line, an escape sequence that
/// rewrites the screen) and the bidirectional-text overrides that reorder what is shown are
/// written as Rust escapes (`\n`, `\u{1b}`, `\u{202e}`); everything else is left as it is.
pub fn printable(name: &str) -> Cow<'_, str> {
    let hostile = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !name.chars().any(hostile) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else if hostile(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Seconds of CLOCK_MONOTONIC: the clock of `bpf_ktime_get_ns`, in the unit of a capture
/// request's deadline.
pub fn monotonic_secs() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u32
}

/// The magic number of a bpffs mount (`statfs.f_type`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The filesystem type of `path` (`statfs.f_type`).
fn fs_type(path: &Path) -> std::io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs to fill.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

fn denied(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

fn run_as_root(path: &Path) -> String {
    format!(
        "{}: permission denied: a node's pinned maps are root's; run this as root (sudo anypop …)",
        path.display()
    )
}

/// Whether a node's pin directory is there to read: `Ok(true)` when it exists on bpffs,
/// `Ok(false)` when it does not exist (the callers say "not pinned" in their own words), and an
/// error that names the path and the fix when it cannot be read (not root) or is not on bpffs.
pub fn pin_dir_present(pin_dir: &Path) -> anyhow::Result<bool> {
    match std::fs::metadata(pin_dir) {
        Ok(_) => {
            if fs_type(pin_dir).is_ok_and(|t| t != BPF_FS_MAGIC) {
                bail!(
                    "{} is not a bpffs mount: pins live in the BPF filesystem (mount -t bpf bpf /sys/fs/bpf, or give --pin-root a directory in it)",
                    pin_dir.display()
                );
            }
            Ok(true)
        }
        Err(e) if denied(&e) => bail!("{}", run_as_root(pin_dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The nearest directory that exists tells why: bpffs not mounted (then even
            // /sys/fs/bpf is sysfs), a pin root elsewhere, or a directory we may not enter.
            for dir in pin_dir.ancestors().skip(1) {
                match std::fs::metadata(dir) {
                    Ok(_) => {
                        if fs_type(dir).is_ok_and(|t| t != BPF_FS_MAGIC) {
                            bail!(
                                "{} is not a bpffs mount, so no node is pinned under it: mount -t bpf bpf /sys/fs/bpf (or give --pin-root a directory in the BPF filesystem)",
                                dir.display()
                            );
                        }
                        return Ok(false);
                    }
                    Err(e) if denied(&e) => bail!("{}", run_as_root(dir)),
                    Err(_) => continue,
                }
            }
            Ok(false)
        }
        Err(e) => bail!("{}: {e}", pin_dir.display()),
    }
}

/// Opens one pinned map; a permission error names the path and says to run as root.
pub fn open_pin(path: &Path) -> anyhow::Result<MapData> {
    MapData::from_pin(path).map_err(|e| {
        // aya's errors keep the errno in their sources, not in their text.
        let mut text = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>()
                && denied(io)
            {
                return anyhow::anyhow!("{}", run_as_root(path));
            }
            text = format!("{text}: {s}");
            src = s.source();
        }
        anyhow::anyhow!("opening {}: {text}", path.display())
    })
}

/// Packets and bytes per reason between two snapshots, as rates per second.
pub fn rates(prev: &Snapshot, now: &Snapshot, secs: f64) -> Vec<(Reason, f64, f64)> {
    Reason::ALL
        .iter()
        .map(|&r| {
            let a = prev.get(r);
            let b = now.get(r);
            let dp = b.packets.saturating_sub(a.packets) as f64 / secs.max(1e-9);
            let db = b.bytes.saturating_sub(a.bytes) as f64 / secs.max(1e-9);
            (r, dp, db)
        })
        .collect()
}

/// Human-friendly number: 950, 12.3k, 4.56M.
pub fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// One line: forwarded, passed and dropped rates, then every reason that moved, busiest first.
pub fn summary_line(prev: &Snapshot, now: &Snapshot, secs: f64) -> String {
    let mut r = rates(prev, now, secs);
    let fwd: f64 = r
        .iter()
        .filter(|(x, ..)| matches!(x, Reason::FwdIpip | Reason::FwdIpipKernel))
        .map(|x| x.1)
        .sum();
    let drop: f64 = r.iter().filter(|(x, ..)| x.is_drop()).map(|x| x.1).sum();
    let pass: f64 = r
        .iter()
        .filter(|(x, ..)| !x.is_drop() && !matches!(x, Reason::FwdIpip | Reason::FwdIpipKernel))
        .map(|x| x.1)
        .sum();
    r.retain(|x| x.1 > 0.0);
    r.sort_by(|a, b| b.1.total_cmp(&a.1));
    let detail: Vec<String> = r
        .iter()
        .map(|(x, p, _)| format!("{}={}/s", x.name(), si(*p)))
        .collect();
    format!(
        "fwd {}/s drop {}/s pass {}/s | {}",
        si(fwd),
        si(drop),
        si(pass),
        if detail.is_empty() {
            "idle".to_string()
        } else {
            detail.join(" ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use anypop_common::layout::Counter;

    fn snap(v: &[(Reason, u64)]) -> Snapshot {
        let mut s = Snapshot {
            by_reason: vec![Counter::default(); 32],
        };
        for (r, p) in v {
            s.by_reason[*r as usize] = Counter {
                packets: *p,
                bytes: *p * 100,
            };
        }
        s
    }

    #[test]
    fn summary_shows_rates_busiest_first() {
        let a = snap(&[(Reason::FwdIpip, 100), (Reason::DropRule, 1000)]);
        let b = snap(&[
            (Reason::FwdIpip, 300),
            (Reason::DropRule, 21_000),
            (Reason::PassNotVip, 4),
        ]);
        let line = summary_line(&a, &b, 2.0);
        assert_eq!(
            line,
            "fwd 100/s drop 10.0k/s pass 2/s | drop_rule=10.0k/s fwd_ipip=100/s pass_not_vip=2/s"
        );
    }

    #[test]
    fn printable_escapes_control_and_bidi_characters_only() {
        assert!(matches!(printable("game-eu 1 ünï"), Cow::Borrowed(_)));
        assert_eq!(printable("a\nb\x1b[2Jc\t"), "a\\nb\\u{1b}[2Jc\\t");
        assert_eq!(printable("evil\u{202e}lmth"), "evil\\u{202e}lmth");
        assert_eq!(printable("\u{7f}"), "\\u{7f}");
    }

    #[test]
    fn idle_when_nothing_moved() {
        let a = snap(&[(Reason::FwdIpip, 5)]);
        assert!(summary_line(&a, &a, 5.0).ends_with("| idle"));
    }
}
