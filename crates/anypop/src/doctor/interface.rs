//! An interface's group: it exists, native XDP (really attached and detached), the veth peer,
//! offloads and RX queues (see `nic`), the MTU. Facts come from the kernel: ioctls for the index,
//! driver and MTU, rtnetlink for the XDP program and the veth peer.
use aya::programs::{Xdp, XdpMode};

use super::{Check, Group, IPIP_OVERHEAD, PLAYER_MTU, error_chain, nic, veth};
use crate::{
    config::Role,
    dataplane::baseline::Baseline,
    sys::{ethtool, iface},
};

/// What the node (if any) says about an interface being checked.
pub(super) struct NodeFacts {
    pub(super) name: String,
    pub(super) role: Role,
    pub(super) xdp_auto: bool,
    /// The interface is one of the node's (not only named with --interface).
    pub(super) listed: bool,
}

pub(super) struct IfaceContext {
    pub(super) node: Option<NodeFacts>,
    pub(super) cpus: u32,
}

/// The group of interface `ifname`: the checks stop at the first if it does not exist.
/// `baseline`: the loaded baseline programs, for the native-XDP probe.
pub(super) fn interface_checks(
    ifname: &str,
    baseline: Option<&mut Baseline>,
    ctx: &IfaceContext,
) -> Group {
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
    let probe = xdp_probe(ifname, baseline);
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

    g.checks
        .extend(nic::nic_checks(ifname, driver.as_deref(), ctx.cpus));
    match iface::mtu_of(ifname) {
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

pub(super) fn interface_index(ifname: &str) -> Option<u32> {
    let c = std::ffi::CString::new(ifname).ok()?;
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => None,
        i => Some(i),
    }
}

/// The driver's name (ETHTOOL_GDRVINFO: namespace-local, unlike /sys/class/net/IF/device/driver,
/// and present for virtual devices too).
pub fn driver_of(ifname: &str) -> Option<String> {
    ethtool::driver(ifname).ok().filter(|d| !d.is_empty())
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

/// Tries native XDP on `ifname`, then generic XDP if native is refused — unless a program is
/// already attached (it is left alone) or none could be loaded.
fn xdp_probe(ifname: &str, baseline: Option<&mut Baseline>) -> Probe {
    let existing = crate::dataplane::links::seen_xdp(ifname).map(ExistingXdp::from);
    match (existing, baseline) {
        (Some(x), _) => Probe::Skipped(x),
        (None, None) => Probe::NotLoaded,
        (None, Some(b)) => match probe_attach(b, ifname, XdpMode::Driver) {
            Ok(()) => Probe::Native,
            Err(native) => Probe::NoNative {
                native,
                generic: probe_attach(b, ifname, XdpMode::Skb),
            },
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;
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
}
