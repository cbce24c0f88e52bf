//! `anypop doctor`: checks a machine before deployment and says, for anything not ready, what to do.
//!
//! Each check ends with a verdict: `ok`, `warn` (works, but costs speed or will bite under some
//! traffic) or `FAIL` (`anypop run` would refuse, or players would be dropped). Checks come in
//! groups: the kernel, then each interface, then the node's needs from the network file.
//!
//! Facts about interfaces are read through the calling process's network namespace (ioctls,
//! `ethtool`, `ip`, /proc/sys/net), never through /sys/class/net: a process that entered a
//! namespace with `setns` still sees the /sys of the namespace sysfs was mounted in, and would
//! report on somebody else's interface of the same name.
//!
//! The native-XDP check really attaches a program (the baseline `base_pass`, which passes every
//! packet) and detaches it at once: only the driver knows whether it can, and the error it gives
//! is the one `anypop run` would get. An interface that already has an XDP program is not probed,
//! since replacing that program would disrupt its traffic.
//!
//! The decision helpers (`*_check`) and the parsers of `ethtool`/`ip` output are pure, so the
//! verdicts are unit-tested on the host without a kernel.
mod veth;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail};
use aya::programs::{Xdp, XdpMode};

use crate::{
    config::{self, Network, Node, Role},
    dataplane::{DataplaneError, baseline::Baseline},
};

/// The oldest kernel anypop's programs load on: the edge program's rule walk uses `bpf_loop`
/// (5.17); everything else it needs (BPF atomics, `bpf_fib_lookup`, devmap redirects) is older.
pub const MIN_KERNEL: (u32, u32) = (5, 17);
/// From here on the backend's `dsr` attaches through TCX and needs no `clsact` qdisc.
pub const TCX_KERNEL: (u32, u32) = (6, 6);
/// The outer IPv4 header a POP puts in front of every forwarded packet.
pub const IPIP_OVERHEAD: u32 = 20;
/// The player-side MTU games and the internet use; the POP→backend path needs this + 20.
pub const PLAYER_MTU: u32 = 1500;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    /// The fixed-width tag a line starts with; `FAIL` is upper case so it stands out in a scroll.
    pub fn tag(self) -> &'static str {
        match self {
            Verdict::Ok => "[ ok ]",
            Verdict::Warn => "[warn]",
            Verdict::Fail => "[FAIL]",
        }
    }
}

/// One check: what was found and, unless it is ok, the fix.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub verdict: Verdict,
    pub what: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(what: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Ok,
            what: what.into(),
            fix: None,
        }
    }

    pub fn warn(what: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Warn,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(what: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Fail,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    /// `[ ok ] what` or `[warn] what — fix: …`, always one line.
    pub fn line(&self) -> String {
        match &self.fix {
            Some(fix) if self.verdict != Verdict::Ok => {
                format!("{} {} — fix: {}", self.verdict.tag(), self.what, fix)
            }
            _ => format!("{} {}", self.verdict.tag(), self.what),
        }
    }
}

/// The checks about one thing (the kernel, an interface, the node).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Group {
    pub title: String,
    pub checks: Vec<Check>,
}

impl Group {
    fn new(title: impl Into<String>) -> Group {
        Group {
            title: title.into(),
            checks: Vec::new(),
        }
    }
}

/// Everything `anypop doctor` found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub groups: Vec<Group>,
}

impl Report {
    pub fn count(&self, v: Verdict) -> usize {
        self.groups
            .iter()
            .flat_map(|g| &g.checks)
            .filter(|c| c.verdict == v)
            .count()
    }

    /// Ready to deploy: nothing failed (warnings are the operator's call).
    pub fn passed(&self) -> bool {
        self.count(Verdict::Fail) == 0
    }

    /// The text `anypop doctor` prints: a title per group, one line per check, a summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            out.push_str(&g.title);
            out.push('\n');
            for c in &g.checks {
                out.push_str("  ");
                out.push_str(&c.line());
                out.push('\n');
            }
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// The same for scripts and fleet tooling: `{"groups": [{"title", "checks": [{"verdict",
    /// "what", "fix"}]}], "ok", "warn", "fail", "passed"}`.
    pub fn json(&self) -> String {
        serde_json::json!({
            "groups": self.groups,
            "ok": self.count(Verdict::Ok),
            "warn": self.count(Verdict::Warn),
            "fail": self.count(Verdict::Fail),
            "passed": self.passed(),
        })
        .to_string()
    }

    pub fn summary(&self) -> String {
        let (ok, warn, fail) = (
            self.count(Verdict::Ok),
            self.count(Verdict::Warn),
            self.count(Verdict::Fail),
        );
        let verdict = if fail > 0 {
            "not ready: fix every FAIL above"
        } else if warn > 0 {
            "ready, with warnings"
        } else {
            "ready"
        };
        format!("doctor: {ok} ok, {warn} warn, {fail} FAIL — {verdict}")
    }
}

/// What to check: a node of a network file, and/or interfaces named on the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub config: Option<PathBuf>,
    pub node: Option<String>,
    pub interfaces: Vec<String>,
}

/// Runs every check. Mistakes on the command line (a file that does not load, a node it does not
/// define) are errors, before anything is probed; everything about the machine is a check.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let node: Option<(Network, Node)> = match (&opts.config, &opts.node) {
        (Some(path), Some(name)) => {
            let net = config::load(path).map_err(|e| anyhow!("{e}"))?;
            let node = net.node(name).map_err(|e| anyhow!("{e}"))?.clone();
            Some((net, node))
        }
        (None, None) => None,
        (Some(_), None) => {
            bail!("--config needs --node NAME: the node of the file this machine will run")
        }
        (None, Some(_)) => bail!("--node needs --config FILE: the network file that defines it"),
    };
    let mut report = Report::default();
    let (kernel, mut baseline, version) = kernel_checks();
    report.groups.push(kernel);

    let mut interfaces: Vec<String> = Vec::new();
    if let Some((_, n)) = &node {
        interfaces.extend(n.interfaces.iter().cloned());
    }
    for i in &opts.interfaces {
        if !interfaces.contains(i) {
            interfaces.push(i.clone());
        }
    }
    let cpus = online_cpus();
    for ifname in &interfaces {
        let ctx = IfaceContext {
            node: node.as_ref().map(|(net, n)| NodeFacts {
                name: n.name.clone(),
                role: n.role,
                xdp_auto: n.xdp_mode_auto(&net.defaults),
                listed: n.interfaces.contains(ifname),
            }),
            cpus,
        };
        report
            .groups
            .push(interface_checks(ifname, baseline.as_mut(), &ctx));
    }
    if let Some((net, n)) = &node {
        report.groups.push(node_checks(net, n, version));
    }
    // The baseline programs are unloaded here; nothing of them stays attached (each probe
    // detached its own link already).
    drop(baseline);
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Kernel

/// The kernel group, the loaded baseline programs (for the XDP probes) and the kernel version.
fn kernel_checks() -> (Group, Option<Baseline>, Option<(u32, u32)>) {
    let mut g = Group::new("kernel");
    let release = uname_release();
    let version = parse_kernel_version(&release);
    g.checks.push(kernel_version_check(&release, version));
    g.checks
        .push(btf_check(Path::new("/sys/kernel/btf/vmlinux").exists()));
    g.checks
        .push(bpffs_check(is_bpffs(Path::new("/sys/fs/bpf"))));
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

fn uname_release() -> String {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
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

/// Whether `path` is a mounted bpffs (the filesystem's magic number, not a mount-table lookup,
/// so a bind mount or an unusual mount table cannot fool it).
fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
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
        DataplaneError::Verifier(_) => {
            "the verifier of this kernel rejects anypop's programs: use a 6.x kernel, or report it with this output"
        }
        _ => {
            "fix the FAIL lines above (kernel version, BTF, privileges); the error says which part failed"
        }
    };
    Check::fail(
        format!(
            "BPF programs do not load: {}",
            one_line(&e.to_string(), 240)
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

// ---------------------------------------------------------------------------------------------
// Interfaces

/// What the node (if any) says about an interface being checked.
struct NodeFacts {
    name: String,
    role: Role,
    xdp_auto: bool,
    /// The interface is one of the node's (not only named with --interface).
    listed: bool,
}

struct IfaceContext {
    node: Option<NodeFacts>,
    cpus: u32,
}

fn interface_checks(ifname: &str, baseline: Option<&mut Baseline>, ctx: &IfaceContext) -> Group {
    let mut g = Group::new(format!("interface {ifname}"));
    let index = interface_index(ifname);
    match index {
        Some(i) => g
            .checks
            .push(Check::ok(format!("{ifname} exists (index {i})"))),
        None => {
            let fix = match &ctx.node {
                Some(n) if n.listed => format!(
                    "check `interfaces` of node {} in the network file against `ip -br link` on this machine",
                    n.name
                ),
                _ => "check the name against `ip -br link` on this machine".to_string(),
            };
            g.checks.push(Check::fail(
                format!("interface {ifname} does not exist"),
                fix,
            ));
            return g;
        }
    }
    let driver = driver_of(ifname);
    let existing = crate::dataplane::links::seen_xdp(ifname).map(ExistingXdp::from);
    let probe = match (&existing, baseline) {
        (Some(x), _) => Probe::Skipped(x.clone()),
        (None, None) => Probe::NotLoaded,
        (None, Some(b)) => match probe_attach(b, ifname, XdpMode::Driver) {
            Ok(()) => Probe::Native,
            Err(native) => Probe::NoNative {
                native,
                generic: probe_attach(b, ifname, XdpMode::Skb),
            },
        },
    };
    let xdp_auto = ctx.node.as_ref().map(|n| (n.name.as_str(), n.xdp_auto));
    g.checks.push(native_xdp_check(
        ifname,
        driver.as_deref().unwrap_or("unknown"),
        &probe,
        xdp_auto,
    ));
    if let Ok(all) = crate::sys::netlink::links() {
        let peer = all
            .iter()
            .find(|l| l.name == ifname)
            .and_then(|l| veth::peer_of(l, &all));
        if let Some(peer) = peer {
            g.checks.push(veth::veth_peer_check(ifname, &peer));
        }
    }

    match ethtool(&["-k", ifname]) {
        Ok(text) => g.checks.extend(offload_checks(
            ifname,
            driver.as_deref(),
            &parse_features(&text),
        )),
        Err(e) => g
            .checks
            .push(e.check(ifname, "offloads (LRO, hardware GRO)")),
    }
    match ethtool(&["-l", ifname]) {
        Ok(text) => {
            let ch = parse_channels(&text);
            // The indirection table only matters (and is only asked for) with several queues.
            let rss = match ch.as_ref().map(Channels::rx_queues) {
                Some(q) if q > 1 => Some(
                    ethtool(&["-x", ifname])
                        .map(|t| has_indirection_table(&t))
                        .unwrap_or(false),
                ),
                _ => None,
            };
            g.checks
                .push(queue_check(ifname, ch.as_ref(), rss, ctx.cpus));
        }
        Err(EthtoolError::Failed(_)) => g.checks.push(queue_check(ifname, None, None, ctx.cpus)),
        Err(e) => g.checks.push(e.check(ifname, "RX queues and RSS")),
    }
    match crate::daemon::mtu_of(ifname) {
        Ok(mtu) => g.checks.push(mtu_check(
            ifname,
            mtu as u32,
            ctx.node.as_ref().map(|n| n.role),
        )),
        Err(e) => g.checks.push(Check::warn(
            format!("MTU of {ifname} unknown: {e:#}"),
            format!("check `ip link show {ifname}`"),
        )),
    }
    g
}

fn interface_index(ifname: &str) -> Option<u32> {
    let c = std::ffi::CString::new(ifname).ok()?;
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => None,
        i => Some(i),
    }
}

/// `struct ethtool_drvinfo` (linux/ethtool.h), for ETHTOOL_GDRVINFO. Only `driver` is read; the
/// rest is there for the kernel to fill.
#[repr(C)]
#[allow(dead_code)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const ETHTOOL_GDRVINFO: u32 = 0x3;

/// The driver's name, from the SIOCETHTOOL ioctl (namespace-local, unlike
/// /sys/class/net/IF/device/driver, and present for virtual devices too).
pub fn driver_of(ifname: &str) -> Option<String> {
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let ptr = &mut info as *mut EthtoolDrvinfo as *mut libc::c_char;
    crate::daemon::ifreq_ioctl_with(ifname, libc::SIOCETHTOOL, "driver", |req| {
        req.ifr_ifru.ifru_data = ptr;
    })
    .ok()?;
    let name: Vec<u8> = info
        .driver
        .iter()
        .take_while(|&&b| b != 0)
        .copied()
        .collect();
    (!name.is_empty()).then(|| String::from_utf8_lossy(&name).into_owned())
}

/// An XDP program already on an interface, as the kernel reports it (rtnetlink).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingXdp {
    /// `xdp` (native), `xdpgeneric`, `xdpoffload` or `xdpmulti`.
    pub mode: String,
    /// `id N name NAME` of the program, when known.
    pub program: Option<String>,
}

impl From<crate::dataplane::links::SeenXdp> for ExistingXdp {
    fn from(x: crate::dataplane::links::SeenXdp) -> ExistingXdp {
        let program = match (x.prog_id, x.prog_name) {
            (Some(id), Some(name)) => Some(format!("id {id} {name}")),
            (Some(id), None) => Some(format!("id {id}")),
            _ => None,
        };
        ExistingXdp {
            mode: x.flag,
            program,
        }
    }
}

/// The outcome of trying XDP on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A program was already attached: not probed.
    Skipped(ExistingXdp),
    /// No program could be loaded (see the kernel checks): not probed.
    NotLoaded,
    /// Native (driver) mode attached and was detached again.
    Native,
    /// Native mode was refused (the error), and how generic mode went.
    NoNative {
        native: String,
        generic: Result<(), String>,
    },
}

/// Attaches `base_pass` in `mode` and detaches it at once.
fn probe_attach(b: &mut Baseline, ifname: &str, mode: XdpMode) -> Result<(), String> {
    let p: &mut Xdp = b
        .ebpf
        .program_mut("base_pass")
        .ok_or("base_pass missing")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    let id = p.attach(ifname, mode).map_err(|e| error_chain(&e))?;
    p.detach(id)
        .map_err(|e| format!("detaching the probe: {}", error_chain(&e)))
}

/// `xdp_auto`: the node this interface belongs to and whether it may fall back to generic mode.
pub fn native_xdp_check(
    ifname: &str,
    driver: &str,
    probe: &Probe,
    xdp_auto: Option<(&str, bool)>,
) -> Check {
    match probe {
        Probe::Native => Check::ok(format!("native XDP on {ifname} (driver {driver})")),
        Probe::Skipped(x) => {
            let prog = x
                .program
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            Check::warn(
                format!(
                    "native XDP on {ifname} (driver {driver}) not probed: an XDP program{prog} is already attached in {} mode, and replacing it would disrupt traffic",
                    match x.mode.as_str() {
                        "xdp" | "xdpdrv" => "native",
                        "xdpgeneric" => "generic",
                        "xdpoffload" => "offload",
                        _ => "more than one",
                    }
                ),
                format!(
                    "nothing, if it is anypop's own (`anypop status`); otherwise remove it (`ip link set dev {ifname} xdp off`) before deploying and run doctor again"
                ),
            )
        }
        Probe::NotLoaded => Check::warn(
            format!(
                "native XDP on {ifname} (driver {driver}) not probed: no BPF program could be loaded"
            ),
            "fix the kernel checks above first",
        ),
        Probe::NoNative { native, generic } => match (generic, xdp_auto) {
            (Ok(()), Some((node, true))) => Check::warn(
                format!(
                    "no native XDP on {ifname} (driver {driver}: {native}); node {node} falls back to generic XDP (xdp_mode = \"auto\"), a fraction of native speed"
                ),
                format!(
                    "use a NIC whose driver runs XDP natively (`ethtool -i {ifname}` names the driver)"
                ),
            ),
            (Ok(()), node) => Check::fail(
                format!("no native XDP on {ifname} (driver {driver}: {native}); generic XDP works"),
                format!(
                    "use a NIC whose driver runs XDP natively, or set xdp_mode = \"auto\" for {} to fall back to generic mode (much slower)",
                    match node {
                        Some((name, _)) => format!("node {name}"),
                        None => "the node using it".to_string(),
                    }
                ),
            ),
            (Err(generic), _) => Check::fail(
                format!(
                    "XDP cannot attach to {ifname} (driver {driver}; native: {native}; generic: {generic})"
                ),
                format!(
                    "check what holds the interface's XDP hook (`ip -d link show {ifname}`) and the kernel checks above"
                ),
            ),
        },
    }
}

/// One feature from `ethtool -k`: on/off and whether the driver lets it change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    pub on: bool,
    pub fixed: bool,
}

/// `ethtool -k` output (`large-receive-offload: off [fixed]`) → feature name → state.
pub fn parse_features(text: &str) -> BTreeMap<String, Feature> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(':')?;
            let mut words = rest.split_whitespace();
            let on = match words.next()? {
                "on" => true,
                "off" => false,
                _ => return None,
            };
            Some((
                name.to_string(),
                Feature {
                    on,
                    fixed: rest.contains("[fixed]"),
                },
            ))
        })
        .collect()
}

/// LRO merges packets before XDP sees them (drivers refuse native XDP with it on, or hand XDP
/// frames it cannot forward): FAIL. Hardware GRO does the same on the NICs that have it: warn
/// (most drivers turn it off themselves when XDP attaches). veth with TX checksum offload leaves
/// checksums unfinished in frames that XDP then forwards (see the README): warn.
pub fn offload_checks(
    ifname: &str,
    driver: Option<&str>,
    features: &BTreeMap<String, Feature>,
) -> Vec<Check> {
    let mut out = Vec::new();
    let on = |name: &str| features.get(name).filter(|f| f.on);
    if let Some(f) = on("large-receive-offload") {
        out.push(Check::fail(
            format!(
                "LRO is on on {ifname}: it merges packets before XDP sees them, and drivers refuse native XDP with it"
            ),
            if f.fixed {
                "this driver cannot turn LRO off ([fixed]): use another NIC or driver".to_string()
            } else {
                format!("ethtool -K {ifname} lro off (make it permanent in the interface's configuration)")
            },
        ));
    }
    if let Some(f) = on("rx-gro-hw") {
        out.push(Check::warn(
            format!(
                "hardware GRO is on on {ifname}: it merges packets before XDP sees them (some drivers refuse native XDP with it)"
            ),
            if f.fixed {
                "this driver cannot turn hardware GRO off ([fixed]); check that native XDP attaches".to_string()
            } else {
                format!("ethtool -K {ifname} rx-gro-hw off")
            },
        ));
    }
    if out.is_empty() {
        let state = |name: &str| match features.get(name) {
            Some(f) if f.on => "on",
            Some(_) => "off",
            None => "absent",
        };
        out.push(Check::ok(format!(
            "offloads on {ifname}: LRO {}, hardware GRO {}",
            state("large-receive-offload"),
            state("rx-gro-hw")
        )));
    }
    if driver == Some("veth") && on("tx-checksumming").is_some() {
        out.push(Check::warn(
            format!(
                "TX checksum offload is on on veth {ifname}: veth leaves checksums to hardware that does not exist, and once XDP forwards a frame nobody completes them"
            ),
            format!("ethtool -K {ifname} tx off"),
        ));
    }
    out
}

/// Channel counts from `ethtool -l`; `None` where it says `n/a`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channels {
    pub max_rx: Option<u32>,
    pub max_combined: Option<u32>,
    pub rx: Option<u32>,
    pub combined: Option<u32>,
}

impl Channels {
    /// RX queues in use: dedicated RX channels plus combined ones (at least 1: a NIC that
    /// reports none has its one queue).
    pub fn rx_queues(&self) -> u32 {
        (self.rx.unwrap_or(0) + self.combined.unwrap_or(0)).max(1)
    }
}

/// `ethtool -l` output: "Pre-set maximums:" then "Current hardware settings:", each with
/// `RX:`, `TX:`, `Other:`, `Combined:` lines.
pub fn parse_channels(text: &str) -> Option<Channels> {
    let mut ch = Channels::default();
    let mut current = None;
    let mut seen = false;
    for l in text.lines() {
        let l = l.trim();
        if l.starts_with("Pre-set maximums") {
            current = Some(false);
            continue;
        }
        if l.starts_with("Current hardware settings") {
            current = Some(true);
            continue;
        }
        let Some(cur) = current else { continue };
        let Some((key, value)) = l.split_once(':') else {
            continue;
        };
        let v = value.trim().parse::<u32>().ok();
        match (cur, key.trim()) {
            (false, "RX") => ch.max_rx = v,
            (false, "Combined") => ch.max_combined = v,
            (true, "RX") => {
                ch.rx = v;
                seen = true;
            }
            (true, "Combined") => {
                ch.combined = v;
                seen = true;
            }
            _ => {}
        }
    }
    seen.then_some(ch)
}

/// Whether `ethtool -x` printed an RSS indirection table.
pub fn has_indirection_table(text: &str) -> bool {
    text.contains("RX flow hash indirection table")
}

/// XDP runs on the core that services the RX queue: one queue means one core does all of it,
/// whatever the machine has. `channels`: None when the driver does not report them.
pub fn queue_check(
    ifname: &str,
    channels: Option<&Channels>,
    rss: Option<bool>,
    cpus: u32,
) -> Check {
    let Some(ch) = channels else {
        return Check::warn(
            format!(
                "RX queues of {ifname} unknown (the driver does not report channels to `ethtool -l`)"
            ),
            "make sure the NIC spreads traffic over several RX queues (RSS): with one queue one core takes every packet",
        );
    };
    let queues = ch.rx_queues();
    if queues == 1 && cpus > 1 {
        let fix = match (ch.max_combined, ch.max_rx) {
            (Some(m), _) if m > 1 => {
                format!("ethtool -L {ifname} combined {}", m.min(cpus))
            }
            (_, Some(m)) if m > 1 => format!("ethtool -L {ifname} rx {}", m.min(cpus)),
            _ => format!(
                "use a multi-queue NIC (on a VM: a virtio NIC with queues={cpus}), then ethtool -L {ifname} combined {cpus}"
            ),
        };
        return Check::warn(
            format!(
                "1 RX queue on {ifname} on a {cpus}-core machine: one core runs XDP for every packet"
            ),
            fix,
        );
    }
    if queues > 1 && rss == Some(false) {
        return Check::warn(
            format!(
                "{queues} RX queues on {ifname} but no RSS indirection table: traffic may not be spread over them"
            ),
            format!("ethtool -K {ifname} rxhash on; ethtool -X {ifname} equal {queues}"),
        );
    }
    Check::ok(format!(
        "{queues} RX queue{} on {ifname}{} ({cpus} cores)",
        if queues == 1 { "" } else { "s" },
        if rss == Some(true) { " with RSS" } else { "" }
    ))
}

/// A POP puts a 20-byte outer header on every forwarded packet, and XDP cannot fragment: a
/// packet whose encapsulation exceeds the egress MTU is dropped — answered with ICMP
/// "fragmentation needed" when it has DF (`drop_mtu_icmp`: TCP then sends smaller segments, at
/// the cost of a round trip), silently otherwise (`drop_mtu`). A backend receives those 20
/// bytes too. Game traffic is mostly small, hence a warning, not a failure.
pub fn mtu_check(ifname: &str, mtu: u32, role: Option<Role>) -> Check {
    let need = PLAYER_MTU + IPIP_OVERHEAD;
    if mtu >= need {
        return Check::ok(format!(
            "MTU {mtu} on {ifname}: room for the {IPIP_OVERHEAD}-byte IPIP header on {PLAYER_MTU}-byte player packets"
        ));
    }
    let fits = mtu.saturating_sub(IPIP_OVERHEAD);
    let what = match role {
        Some(Role::Backend) => format!(
            "MTU {mtu} on {ifname}: IPIP from the POPs arrives {IPIP_OVERHEAD} bytes longer than the player's packet, so only player packets up to {fits} bytes get through whole"
        ),
        _ => format!(
            "MTU {mtu} on {ifname}: with the {IPIP_OVERHEAD}-byte IPIP header, player packets over {fits} bytes do not fit towards the backends: with DF the player is told the smaller MTU (ICMP fragmentation needed, drop_mtu_icmp), without DF they are dropped (drop_mtu)"
        ),
    };
    Check::warn(
        what,
        format!(
            "raise the MTU of the POP→backend path to {need} or more (`ip link set dev {ifname} mtu {need}` here, on the backends and on every link between), or keep players' packets to {fits} bytes (lower the VIP-side MTU / TCP MSS {})",
            fits.saturating_sub(40)
        ),
    )
}

/// Why `ethtool` gave no answer.
#[derive(Debug)]
enum EthtoolError {
    /// Not installed.
    Missing,
    /// It ran and failed (e.g. the driver does not support the request).
    Failed(String),
}

impl EthtoolError {
    fn check(&self, ifname: &str, what: &str) -> Check {
        match self {
            EthtoolError::Missing => Check::warn(
                format!("{what} of {ifname} not checked: ethtool is not installed"),
                "apt-get install ethtool (or your distribution's package) and run doctor again",
            ),
            EthtoolError::Failed(e) => Check::warn(
                format!("{what} of {ifname} unknown: ethtool says {e:?}"),
                format!("check by hand with ethtool on {ifname}"),
            ),
        }
    }
}

fn ethtool(args: &[&str]) -> Result<String, EthtoolError> {
    let out = Command::new("ethtool").args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EthtoolError::Missing
        } else {
            EthtoolError::Failed(e.to_string())
        }
    })?;
    if !out.status.success() {
        return Err(EthtoolError::Failed(one_line(
            &String::from_utf8_lossy(&out.stderr),
            160,
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Node

fn node_checks(net: &Network, n: &Node, kernel: Option<(u32, u32)>) -> Group {
    let role = match n.role {
        Role::Pop => "pop",
        Role::Backend => "backend",
    };
    let mut g = Group::new(format!("node {} ({role})", n.name));
    let present: Vec<&String> = n
        .interfaces
        .iter()
        .filter(|i| interface_index(i).is_some())
        .collect();
    match n.role {
        Role::Pop => {
            for ifname in &present {
                g.checks.push(pop_forwarding_check(
                    ifname,
                    read_conf(ifname, "forwarding"),
                ));
                g.checks.push(accept_local_check(
                    ifname,
                    read_conf(ifname, "accept_local"),
                ));
            }
            let ts = n
                .tunnel_source
                .expect("validated: a POP has a tunnel_source");
            g.checks.push(local_address_check(
                &n.name,
                "tunnel_source",
                ts,
                is_local(ts),
            ));
            // Backends that accept this POP (an empty `pops` list accepts every POP).
            for b in net
                .backend_nodes()
                .filter(|b| b.pops.is_empty() || b.pops.contains(&n.name))
            {
                let Some(addr) = b.address else { continue };
                let route = route_get(addr);
                g.checks.push(backend_route_check(
                    &n.name,
                    &n.interfaces,
                    &b.name,
                    addr,
                    &route,
                ));
            }
        }
        Role::Backend => {
            for ifname in &present {
                g.checks.push(backend_forwarding_check(
                    ifname,
                    read_conf(ifname, "forwarding"),
                ));
                if kernel.is_some_and(|v| v < TCX_KERNEL) {
                    g.checks.push(clsact_check(ifname, has_clsact(ifname)));
                }
            }
            let addr = n.address.expect("validated: a backend has an address");
            g.checks.push(local_address_check(
                &n.name,
                "address",
                addr,
                is_local(addr),
            ));
        }
    }
    g
}

/// /proc/sys/net/ipv4/conf/IF/KEY; /proc/sys/net answers for the reader's network namespace.
fn read_conf(ifname: &str, key: &str) -> Option<bool> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{ifname}/{key}"))
        .ok()
        .map(|v| v.trim() != "0")
}

/// The `sysctl` key for an interface setting; names with dots (VLANs: `eth0.100`) need the
/// slash form, since sysctl reads dots as separators.
pub fn sysctl_key(ifname: &str, key: &str) -> String {
    if ifname.contains('.') {
        format!("net/ipv4/conf/{ifname}/{key}")
    } else {
        format!("net.ipv4.conf.{ifname}.{key}")
    }
}

/// `bpf_fib_lookup` refuses to forward from an interface with IPv4 forwarding off: every player
/// would be dropped (`drop_no_route`), and `anypop run` refuses to start.
pub fn pop_forwarding_check(ifname: &str, on: Option<bool>) -> Check {
    match on {
        Some(true) => Check::ok(format!("IPv4 forwarding on {ifname}")),
        _ => Check::fail(
            format!(
                "IPv4 forwarding is off on {ifname}: the POP forwards players through the kernel's FIB, which needs it (anypop run refuses to start)"
            ),
            format!(
                "sysctl -w net.ipv4.conf.all.forwarding=1 {}=1 (and the same in /etc/sysctl.d/)",
                sysctl_key(ifname, "forwarding")
            ),
        ),
    }
}

/// A packet whose backend next hop is not resolved yet goes to the kernel already encapsulated,
/// with our own address as source; the kernel forwards it only with accept_local.
pub fn accept_local_check(ifname: &str, on: Option<bool>) -> Check {
    match on {
        Some(true) => Check::ok(format!("accept_local on {ifname}")),
        _ => Check::warn(
            format!(
                "accept_local is off on {ifname}: while a backend's next hop is being resolved, its players' packets are dropped by the kernel (fwd_ipip_kernel)"
            ),
            format!("sysctl -w {}=1", sysctl_key(ifname, "accept_local")),
        ),
    }
}

/// On a backend, forwarding only matters to the DSR program's FIB lookups: without it replies
/// still leave, through the kernel's route (`dsr_fib_fail`), so this is a warning.
pub fn backend_forwarding_check(ifname: &str, on: Option<bool>) -> Check {
    match on {
        Some(true) => Check::ok(format!("IPv4 forwarding on {ifname} (DSR's FIB lookups)")),
        _ => Check::warn(
            format!(
                "IPv4 forwarding is off on {ifname}: the DSR program cannot ask the FIB for next hops, replies take the kernel's route (dsr_fib_fail)"
            ),
            format!("sysctl -w {}=1", sysctl_key(ifname, "forwarding")),
        ),
    }
}

/// Before TCX (6.6) a TC program attaches under a `clsact` qdisc, which must exist.
pub fn clsact_check(ifname: &str, present: bool) -> Check {
    if present {
        Check::ok(format!(
            "clsact qdisc on {ifname} (dsr attaches to TC egress)"
        ))
    } else {
        Check::fail(
            format!(
                "no clsact qdisc on {ifname}: on kernels before 6.6 the dsr program attaches to TC egress under one"
            ),
            format!("tc qdisc add dev {ifname} clsact"),
        )
    }
}

fn has_clsact(ifname: &str) -> bool {
    Command::new("tc")
        .args(["qdisc", "show", "dev", ifname])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("clsact"))
}

/// Whether `addr` is an address of this machine (of this network namespace): binding to it is
/// exactly what the kernel allows only for local addresses.
fn is_local(addr: Ipv4Addr) -> bool {
    match UdpSocket::bind(SocketAddrV4::new(addr, 0)) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::EADDRNOTAVAIL),
    }
}

pub fn local_address_check(node: &str, field: &str, addr: Ipv4Addr, local: bool) -> Check {
    if local {
        Check::ok(format!("{field} {addr} is an address of this machine"))
    } else {
        Check::fail(
            format!("{field} {addr} is not an address of this machine"),
            format!(
                "add it to an interface (`ip addr add {addr}/32 dev IF`) or correct `{field}` of node {node} in the network file"
            ),
        )
    }
}

/// What `ip route get ADDR` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAnswer {
    /// A route: out of `dev`, through `via` if not on-link; `local` when the address is ours.
    Route {
        dev: String,
        via: Option<String>,
        local: bool,
    },
    /// No route (the error `ip` printed).
    None(String),
}

/// `198.51.100.21 via 10.0.0.1 dev eth0 src 10.0.0.2 uid 0` → dev, via; `local …` → local.
pub fn parse_route_get(text: &str) -> Option<RouteAnswer> {
    let first = text.lines().next()?;
    let w: Vec<&str> = first.split_whitespace().collect();
    let field = |k: &str| {
        w.iter()
            .position(|x| *x == k)
            .and_then(|i| w.get(i + 1))
            .map(|s| s.to_string())
    };
    if matches!(
        w.first().copied(),
        Some("unreachable" | "blackhole" | "prohibit" | "throw")
    ) {
        return Some(RouteAnswer::None(first.trim().to_string()));
    }
    Some(RouteAnswer::Route {
        dev: field("dev")?,
        via: field("via"),
        local: w.first() == Some(&"local"),
    })
}

fn route_get(addr: Ipv4Addr) -> RouteAnswer {
    match Command::new("ip")
        .args(["route", "get", &addr.to_string()])
        .output()
    {
        Ok(o) if o.status.success() => parse_route_get(&String::from_utf8_lossy(&o.stdout))
            .unwrap_or_else(|| RouteAnswer::None("no route in `ip route get`'s answer".into())),
        Ok(o) => RouteAnswer::None(one_line(&String::from_utf8_lossy(&o.stderr), 160)),
        Err(e) => RouteAnswer::None(format!("running ip: {e}")),
    }
}

/// The edge program sends only through the node's own interfaces (the `TX_PORTS` devmap): a
/// backend routed out of any other interface gets nothing (`drop_no_route`).
pub fn backend_route_check(
    node: &str,
    interfaces: &[String],
    backend: &str,
    addr: Ipv4Addr,
    route: &RouteAnswer,
) -> Check {
    let name = format!("backend {backend} ({addr})");
    match route {
        RouteAnswer::None(why) => Check::fail(
            format!("{name} is not reachable: {why}"),
            format!(
                "add a route to it (`ip route add {addr}/32 via GATEWAY dev IF`, IF one of node {node}'s interfaces)"
            ),
        ),
        RouteAnswer::Route { local: true, .. } => Check::warn(
            format!(
                "{name} is an address of this machine: players would be tunnelled to ourselves"
            ),
            format!("check `address` of node {backend}: it must be the backend machine's"),
        ),
        RouteAnswer::Route { dev, via, .. } if !interfaces.contains(dev) => Check::fail(
            format!(
                "{name} is routed out of {dev}, which is not one of node {node}'s interfaces: the edge program sends only through its own interfaces, so its players would be dropped (drop_no_route)"
            ),
            format!(
                "route it through one of {} (`ip route replace {addr}/32{} dev IF`) or add {dev} to `interfaces` of node {node}",
                interfaces.join(", "),
                via.as_deref()
                    .map(|v| format!(" via {v}"))
                    .unwrap_or_default()
            ),
        ),
        RouteAnswer::Route { dev, via, .. } => Check::ok(format!(
            "{name} reachable out of {dev}{}",
            via.as_deref()
                .map(|v| format!(" via {v}"))
                .unwrap_or_else(|| " (on-link)".into())
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn online_cpus() -> u32 {
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 { 1 } else { n as u32 }
}

/// An error and its causes on one line (aya's attach errors keep the errno in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// Newlines folded and the text cut at `max` characters, so a check stays one line.
fn one_line(s: &str, max: usize) -> String {
    let joined = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if joined.chars().count() > max {
        let cut: String = joined.chars().take(max).collect();
        format!("{cut}…")
    } else {
        joined
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

    #[test]
    fn lines_and_summary() {
        assert_eq!(Check::ok("kernel 6.1").line(), "[ ok ] kernel 6.1");
        assert_eq!(
            Check::fail("LRO is on", "ethtool -K eth0 lro off").line(),
            "[FAIL] LRO is on — fix: ethtool -K eth0 lro off"
        );
        assert_eq!(Check::warn("x", "y").line(), "[warn] x — fix: y");
        let mut r = Report::default();
        r.groups.push(Group {
            title: "kernel".into(),
            checks: vec![Check::ok("a"), Check::warn("b", "c")],
        });
        assert!(r.passed());
        assert_eq!(
            r.summary(),
            "doctor: 1 ok, 1 warn, 0 FAIL — ready, with warnings"
        );
        r.groups.push(Group {
            title: "interface eth0".into(),
            checks: vec![Check::fail("d", "e")],
        });
        assert!(!r.passed());
        let text = r.render();
        assert!(text.starts_with(
            "kernel\n  [ ok ] a\n  [warn] b — fix: c\ninterface eth0\n  [FAIL] d — fix: e\n"
        ));
        assert!(text.ends_with("doctor: 1 ok, 1 warn, 1 FAIL — not ready: fix every FAIL above\n"));
        let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(j["fail"], 1);
        assert_eq!(j["passed"], false);
        assert_eq!(j["groups"][1]["title"], "interface eth0");
        assert_eq!(j["groups"][1]["checks"][0]["verdict"], "fail");
        assert_eq!(j["groups"][1]["checks"][0]["fix"], "e");
        assert_eq!(j["groups"][0]["checks"][0]["fix"], serde_json::Value::Null);
    }

    const ETHTOOL_K_MLX: &str = "Features for eth0:
rx-checksumming: on
tx-checksumming: on
\ttx-checksum-ipv4: off [fixed]
generic-receive-offload: on
large-receive-offload: on
rx-gro-hw: off [requested on]
";

    #[test]
    fn features_and_offloads() {
        let f = parse_features(ETHTOOL_K_MLX);
        assert_eq!(
            f["large-receive-offload"],
            Feature {
                on: true,
                fixed: false
            }
        );
        assert_eq!(
            f["tx-checksum-ipv4"],
            Feature {
                on: false,
                fixed: true
            }
        );
        assert!(!f["rx-gro-hw"].on);
        assert!(!f.contains_key("Features for eth0"));
        let c = offload_checks("eth0", Some("mlx5_core"), &f);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].verdict, Verdict::Fail);
        assert_eq!(
            c[0].fix.as_deref(),
            Some("ethtool -K eth0 lro off (make it permanent in the interface's configuration)")
        );

        let gro = parse_features("rx-gro-hw: on\nlarge-receive-offload: off\n");
        let c = offload_checks("eth1", Some("bnxt_en"), &gro);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].verdict, Verdict::Warn);
        assert_eq!(c[0].fix.as_deref(), Some("ethtool -K eth1 rx-gro-hw off"));

        let veth = parse_features(
            "tx-checksumming: on\nlarge-receive-offload: off [fixed]\nrx-gro-hw: off [fixed]\n",
        );
        let c = offload_checks("t0", Some("veth"), &veth);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], Check::ok("offloads on t0: LRO off, hardware GRO off"));
        assert_eq!(c[1].verdict, Verdict::Warn);
        assert_eq!(c[1].fix.as_deref(), Some("ethtool -K t0 tx off"));
        // The same offload on a real NIC is fine.
        let c = offload_checks("eth0", Some("ixgbe"), &veth);
        assert_eq!(
            c,
            vec![Check::ok("offloads on eth0: LRO off, hardware GRO off")]
        );
        let fixed_on = parse_features("large-receive-offload: on [fixed]\n");
        assert!(
            offload_checks("e", None, &fixed_on)[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("cannot turn LRO off")
        );
    }

    const ETHTOOL_L_VETH: &str = "Channel parameters for t0:
Pre-set maximums:
RX:\t\t2
TX:\t\t2
Other:\t\tn/a
Combined:\tn/a
Current hardware settings:
RX:\t\t1
TX:\t\t1
Other:\t\tn/a
Combined:\tn/a
";

    const ETHTOOL_L_NIC: &str = "Channel parameters for eth0:
Pre-set maximums:
RX:\t\tn/a
TX:\t\tn/a
Other:\t\t1
Combined:\t63
Current hardware settings:
RX:\t\tn/a
TX:\t\tn/a
Other:\t\t1
Combined:\t8
";

    #[test]
    fn channels_and_queues() {
        let veth = parse_channels(ETHTOOL_L_VETH).unwrap();
        assert_eq!(veth.rx_queues(), 1);
        assert_eq!(veth.max_rx, Some(2));
        let c = queue_check("t0", Some(&veth), None, 4);
        assert_eq!(c.verdict, Verdict::Warn);
        assert_eq!(c.fix.as_deref(), Some("ethtool -L t0 rx 2"));
        assert_eq!(queue_check("t0", Some(&veth), None, 1).verdict, Verdict::Ok);

        let nic = parse_channels(ETHTOOL_L_NIC).unwrap();
        assert_eq!(nic.rx_queues(), 8);
        assert_eq!(nic.max_combined, Some(63));
        let c = queue_check("eth0", Some(&nic), Some(true), 16);
        assert_eq!(c, Check::ok("8 RX queues on eth0 with RSS (16 cores)"));
        let c = queue_check("eth0", Some(&nic), Some(false), 16);
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(c.fix.unwrap().contains("ethtool -X eth0 equal 8"));

        let one = Channels {
            max_combined: Some(8),
            combined: Some(1),
            ..Default::default()
        };
        assert_eq!(
            queue_check("eth0", Some(&one), None, 4).fix.as_deref(),
            Some("ethtool -L eth0 combined 4")
        );
        assert_eq!(queue_check("br0", None, None, 4).verdict, Verdict::Warn);
        assert_eq!(parse_channels("Cannot get device channel parameters"), None);
        assert!(has_indirection_table(
            "RX flow hash indirection table for eth0 with 8 RX ring(s):\n    0:      0     1"
        ));
        assert!(!has_indirection_table(""));
    }

    #[test]
    fn mtu() {
        assert_eq!(
            mtu_check("eth0", 9000, Some(Role::Pop)).verdict,
            Verdict::Ok
        );
        assert_eq!(mtu_check("eth0", 1520, None).verdict, Verdict::Ok);
        let c = mtu_check("eth0", 1500, Some(Role::Pop));
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(
            c.what.contains("over 1480 bytes") && c.what.contains("drop_mtu"),
            "{}",
            c.what
        );
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("mtu 1520") && fix.contains("TCP MSS 1440"),
            "{fix}"
        );
        let c = mtu_check("eth0", 1500, Some(Role::Backend));
        assert!(c.what.contains("up to 1480 bytes"), "{}", c.what);
    }

    #[test]
    fn existing_xdp() {
        use crate::dataplane::links::SeenXdp;
        let native = ExistingXdp::from(SeenXdp {
            flag: "xdp".into(),
            prog_id: Some(42),
            prog_name: Some("edge".into()),
        });
        assert_eq!(native.mode, "xdp");
        assert_eq!(native.program.as_deref(), Some("id 42 edge"));
        let generic = ExistingXdp::from(SeenXdp {
            flag: "xdpgeneric".into(),
            prog_id: Some(9),
            prog_name: None,
        });
        assert_eq!(generic.program.as_deref(), Some("id 9"));
        let c = native_xdp_check("t0", "veth", &Probe::Skipped(native), None);
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(
            c.what.contains("already attached in native mode"),
            "{}",
            c.what
        );
        assert!(c.fix.unwrap().contains("ip link set dev t0 xdp off"));
    }

    #[test]
    fn native_xdp_verdicts() {
        assert_eq!(
            native_xdp_check("eth0", "virtio_net", &Probe::Native, None),
            Check::ok("native XDP on eth0 (driver virtio_net)")
        );
        let no = Probe::NoNative {
            native: "Operation not supported (os error 95)".into(),
            generic: Ok(()),
        };
        let c = native_xdp_check("br0", "bridge", &no, Some(("pop-1", false)));
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.fix.as_deref().unwrap().contains("xdp_mode = \"auto\""));
        assert!(c.what.contains("generic XDP works"));
        let c = native_xdp_check("br0", "bridge", &no, Some(("pop-1", true)));
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(c.what.contains("node pop-1 falls back to generic XDP"));
        let neither = Probe::NoNative {
            native: "a".into(),
            generic: Err("b".into()),
        };
        assert_eq!(
            native_xdp_check("x", "y", &neither, None).verdict,
            Verdict::Fail
        );
        assert_eq!(
            native_xdp_check("x", "y", &Probe::NotLoaded, None).verdict,
            Verdict::Warn
        );
    }

    #[test]
    fn node_verdicts() {
        let c = pop_forwarding_check("eth0", Some(false));
        assert_eq!(c.verdict, Verdict::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some(
                "sysctl -w net.ipv4.conf.all.forwarding=1 net.ipv4.conf.eth0.forwarding=1 (and the same in /etc/sysctl.d/)"
            )
        );
        assert_eq!(
            pop_forwarding_check("eth0", Some(true)).verdict,
            Verdict::Ok
        );
        assert_eq!(pop_forwarding_check("eth0", None).verdict, Verdict::Fail);
        assert_eq!(
            sysctl_key("eth0.100", "forwarding"),
            "net/ipv4/conf/eth0.100/forwarding"
        );
        assert_eq!(
            backend_forwarding_check("eth0", Some(false)).verdict,
            Verdict::Warn
        );
        assert_eq!(
            accept_local_check("eth0", Some(false)).verdict,
            Verdict::Warn
        );
        assert_eq!(
            clsact_check("eth0", false).fix.as_deref(),
            Some("tc qdisc add dev eth0 clsact")
        );
        let c = local_address_check(
            "pop-1",
            "tunnel_source",
            Ipv4Addr::new(198, 51, 100, 9),
            false,
        );
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.fix.unwrap().contains("`tunnel_source` of node pop-1"));
    }

    #[test]
    fn routes() {
        let r = parse_route_get(
            "198.51.100.21 via 10.0.0.1 dev eth0 src 10.0.0.2 uid 0 \n    cache \n",
        );
        assert_eq!(
            r,
            Some(RouteAnswer::Route {
                dev: "eth0".into(),
                via: Some("10.0.0.1".into()),
                local: false
            })
        );
        let local =
            parse_route_get("local 192.0.2.1 dev lo table local src 192.0.2.1 uid 0\n").unwrap();
        assert!(matches!(local, RouteAnswer::Route { local: true, .. }));
        assert!(matches!(
            parse_route_get("unreachable 10.9.9.9 uid 0"),
            Some(RouteAnswer::None(_))
        ));
        let ifs = vec!["eth0".to_string()];
        let a = Ipv4Addr::new(198, 51, 100, 21);
        let ok = backend_route_check("pop-1", &ifs, "be-1", a, &r.unwrap());
        assert_eq!(
            ok,
            Check::ok("backend be-1 (198.51.100.21) reachable out of eth0 via 10.0.0.1")
        );
        let other = RouteAnswer::Route {
            dev: "eth9".into(),
            via: None,
            local: false,
        };
        let c = backend_route_check("pop-1", &ifs, "be-1", a, &other);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.what.contains("drop_no_route"));
        assert!(
            c.fix
                .unwrap()
                .contains("add eth9 to `interfaces` of node pop-1")
        );
        let none = RouteAnswer::None("RTNETLINK answers: Network is unreachable".into());
        let c = backend_route_check("pop-1", &ifs, "be-1", a, &none);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.fix.unwrap().starts_with("add a route to it"));
        assert_eq!(
            backend_route_check("pop-1", &ifs, "be-1", a, &local).verdict,
            Verdict::Warn
        );
    }

    #[test]
    fn one_line_folds_and_cuts() {
        assert_eq!(one_line("a\n\n  b  \n", 100), "a; b");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
