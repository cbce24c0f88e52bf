//! The kernel group: version, BTF, bpffs, privileges, whether anypop's programs load, the JIT.
use std::path::Path;

use super::{Check, Group, MIN_KERNEL, Verdict, error_chain, one_line};
use crate::{
    dataplane::{DataplaneError, baseline::Baseline},
    sys,
};

/// The kernel group, the loaded baseline programs (for the XDP probes) and the kernel version.
pub(super) fn kernel_checks() -> (Group, Option<Baseline>, Option<(u32, u32)>) {
    let mut g = Group::new("kernel");
    let release = sys::kernel::release();
    let version = parse_kernel_version(&release);
    g.checks.push(kernel_version_check(&release, version));
    g.checks
        .push(btf_check(Path::new("/sys/kernel/btf/vmlinux").exists()));
    g.checks
        .push(bpffs_check(sys::kernel::is_bpffs(Path::new("/sys/fs/bpf"))));
    let capeff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s));
    let privileges = privilege_check(unsafe { libc::geteuid() }, capeff);
    let privileged = privileges.verdict == Verdict::Ok;
    g.checks.push(privileges);
    // bpf_jit_enable lives only in the initial network namespace's /proc/sys/net; elsewhere the
    // loaded program itself tells (a JIT-compiled program has a native image).
    let sysctl = std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").ok();
    let baseline = match Baseline::load() {
        Ok(b) => {
            g.checks.push(Check::ok(
                "BPF programs load and pass the verifier (baseline: base_pass, base_drop, base_drop_read, base_tx, base_tc)",
            ));
            let jitted = b
                .ebpf
                .program("base_pass")
                .and_then(|p| p.info().ok())
                .map(|i| i.size_jitted());
            g.checks.push(jit_check(jitted, sysctl.as_deref()));
            Some(b)
        }
        Err(e) => {
            g.checks.push(load_failure_check(&e, privileged));
            g.checks.push(jit_check(None, sysctl.as_deref()));
            None
        }
    };
    (g, baseline, version)
}

/// `6.1.0-18-amd64` → (6, 1).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn kernel_version_check(release: &str, version: Option<(u32, u32)>) -> Check {
    let (min_major, min_minor) = MIN_KERNEL;
    match version {
        None => Check::warn(
            format!("kernel version {release:?} not understood"),
            format!("make sure the kernel is {min_major}.{min_minor} or newer (6.x recommended)"),
        ),
        Some(v) if v < MIN_KERNEL => Check::fail(
            format!(
                "kernel {release} is older than {min_major}.{min_minor}, which anypop's programs need (bpf_loop)"
            ),
            "upgrade to a 6.x kernel (e.g. Debian 12's 6.1 or a backports kernel)",
        ),
        Some((major, _)) if major < 6 => Check::warn(
            format!("kernel {release} works; 6.x is recommended"),
            "upgrade to a 6.x kernel: anypop is tested on 6.x, and backends attach dsr through TCX only from 6.6",
        ),
        Some(_) => Check::ok(format!("kernel {release}")),
    }
}

pub fn btf_check(present: bool) -> Check {
    if present {
        Check::ok("kernel BTF at /sys/kernel/btf/vmlinux")
    } else {
        Check::fail(
            "no kernel BTF (/sys/kernel/btf/vmlinux missing)",
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution's stock kernel is)",
        )
    }
}

pub fn bpffs_check(mounted: bool) -> Check {
    if mounted {
        Check::ok("bpffs mounted at /sys/fs/bpf")
    } else {
        Check::fail(
            "bpffs is not mounted at /sys/fs/bpf: anypop pins its maps and links there",
            "mount -t bpf bpf /sys/fs/bpf (and keep it with `bpf /sys/fs/bpf bpf defaults 0 0` in /etc/fstab)",
        )
    }
}

/// The effective capability set from /proc/self/status (`CapEff:\t000001ffffffffff`).
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Loading programs needs CAP_BPF (or CAP_SYS_ADMIN, which implies it) and attaching XDP needs
/// CAP_NET_ADMIN. Whether unprivileged BPF is allowed does not matter: anypop never runs
/// unprivileged.
pub fn privilege_check(euid: u32, capeff: Option<u64>) -> Check {
    let has = |cap: u32| capeff.is_some_and(|c| c & (1u64 << cap) != 0);
    let bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);
    let net = has(CAP_NET_ADMIN);
    match (euid == 0, bpf && net) {
        (true, true) => Check::ok("running as root"),
        (false, true) => Check::ok(format!(
            "running as uid {euid} with CAP_BPF and CAP_NET_ADMIN"
        )),
        (root, false) => {
            let mut missing = Vec::new();
            if !bpf {
                missing.push("CAP_BPF");
            }
            if !net {
                missing.push("CAP_NET_ADMIN");
            }
            Check::fail(
                format!(
                    "running as {} without {}: anypop cannot load programs or attach XDP",
                    if root {
                        "root".to_string()
                    } else {
                        format!("uid {euid}")
                    },
                    missing.join(" and ")
                ),
                "run as root (sudo anypop doctor …), or grant CAP_BPF and CAP_NET_ADMIN (a container needs them too)",
            )
        }
    }
}

fn load_failure_check(e: &DataplaneError, privileged: bool) -> Check {
    let fix = match e {
        DataplaneError::NotBuilt => {
            "rebuild anypop with its eBPF programs: bash scripts/setup.sh && cargo build --release"
        }
        _ if !privileged => "run as root (see the privilege check above)",
        DataplaneError::Verifier { .. } => {
            "the verifier of this kernel rejects anypop's programs: use a 6.x kernel, or report it with this output"
        }
        _ => {
            "fix the FAIL lines above (kernel version, BTF, privileges); the error says which part failed"
        }
    };
    Check::fail(
        format!(
            "BPF programs do not load: {}",
            one_line(&error_chain(e), 240)
        ),
        fix,
    )
}

/// `jitted`: the size of the loaded program's native image (None: nothing loaded); `sysctl`:
/// /proc/sys/net/core/bpf_jit_enable if readable.
pub fn jit_check(jitted: Option<u32>, sysctl: Option<&str>) -> Check {
    let fix =
        "sysctl -w net.core.bpf_jit_enable=1 (and net.core.bpf_jit_enable = 1 in /etc/sysctl.d/)";
    let setting = sysctl.map(str::trim);
    if setting == Some("2") {
        return Check::warn(
            "BPF JIT in debug mode (bpf_jit_enable=2): every program load dumps its image to the kernel log",
            fix,
        );
    }
    match (jitted, setting) {
        (Some(n), _) if n > 0 => Check::ok("BPF JIT on (programs run as native code)"),
        (Some(_), _) | (None, Some("0")) => Check::fail(
            "BPF JIT off: programs run in the interpreter, several times slower under a flood",
            fix,
        ),
        (None, Some("1")) => Check::ok("BPF JIT on (net.core.bpf_jit_enable = 1)"),
        (None, _) => Check::warn(
            "BPF JIT state unknown (no program loaded, and net.core.bpf_jit_enable is only visible in the initial network namespace)",
            "check `sysctl net.core.bpf_jit_enable` on the host: it must be 1",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("5.15.0"), Some((5, 15)));
        assert_eq!(parse_kernel_version("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_kernel_version("weird"), None);
        let v = |r: &str| kernel_version_check(r, parse_kernel_version(r)).verdict;
        assert_eq!(v("5.10.0-28-amd64"), Verdict::Fail);
        assert_eq!(
            v("5.15.0-91-generic"),
            Verdict::Fail,
            "no bpf_loop before 5.17"
        );
        assert_eq!(v("5.19.0"), Verdict::Warn);
        assert_eq!(v("6.1.0-18-amd64"), Verdict::Ok);
        assert_eq!(v("garbage"), Verdict::Warn);
    }

    #[test]
    fn capabilities() {
        let status = "Name:\tanypop\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let all = parse_cap_eff(status);
        assert_eq!(all, Some(0x1ff_ffff_ffff));
        assert_eq!(privilege_check(0, all).verdict, Verdict::Ok);
        let bpf_net = (1u64 << CAP_BPF) | (1u64 << CAP_NET_ADMIN);
        assert_eq!(privilege_check(1000, Some(bpf_net)).verdict, Verdict::Ok);
        let c = privilege_check(1000, Some(1u64 << CAP_NET_ADMIN));
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.what.contains("without CAP_BPF"), "{}", c.what);
        assert!(c.fix.unwrap().contains("run as root"));
        // Root in a container stripped of its capabilities is not enough either.
        assert_eq!(privilege_check(0, Some(0)).verdict, Verdict::Fail);
    }

    /// The fix follows what failed, read from the error's kind: a verifier refusal is not a
    /// privilege problem, and the cause (the errno, the verifier's words) stays on the line.
    #[test]
    fn load_failures_name_their_cause_and_fix() {
        let refused = DataplaneError::Verifier {
            program: "edge".into(),
            log: "0: (b7) r0 = 0\nR1 invalid mem access 'scalar'".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        let c = load_failure_check(&refused, true);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.what.contains("program `edge`"), "{}", c.what);
        assert!(c.what.contains("R1 invalid mem access"), "{}", c.what);
        assert!(
            c.what.ends_with("Permission denied (os error 13)"),
            "{}",
            c.what
        );
        assert!(c.fix.unwrap().contains("verifier of this kernel"));
        // Unprivileged, the same refusal is first a privilege problem.
        assert!(
            load_failure_check(&refused, false)
                .fix
                .unwrap()
                .starts_with("run as root")
        );
        let missing = DataplaneError::ProgramMissing {
            program: "dsr".into(),
        };
        assert!(
            load_failure_check(&missing, true)
                .fix
                .unwrap()
                .starts_with("fix the FAIL lines above")
        );
    }

    #[test]
    fn jit() {
        assert_eq!(jit_check(Some(120), Some("1\n")).verdict, Verdict::Ok);
        assert_eq!(jit_check(Some(120), None).verdict, Verdict::Ok);
        assert_eq!(jit_check(Some(0), None).verdict, Verdict::Fail);
        assert_eq!(jit_check(None, Some("0\n")).verdict, Verdict::Fail);
        assert_eq!(jit_check(None, Some("1")).verdict, Verdict::Ok);
        assert_eq!(jit_check(Some(120), Some("2")).verdict, Verdict::Warn);
        assert_eq!(jit_check(None, None).verdict, Verdict::Warn);
        assert!(
            jit_check(Some(0), None)
                .fix
                .unwrap()
                .contains("sysctl -w net.core.bpf_jit_enable=1")
        );
    }
}
