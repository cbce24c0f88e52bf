//! `anypop doctor`: checks a machine before deployment and says, for anything not ready, what to do.
//!
//! Each check ends with a verdict: `ok`, `warn` (works, but costs speed or will bite under some
//! traffic) or `FAIL` (`anypop run` would refuse, or players would be dropped). Checks come in
//! groups: the kernel, then each interface, then the node's needs from the network file.
//!
//! Facts are asked of the kernel, for the calling thread's network namespace, through `sys`:
//! ioctls (index, MTU, and what `ethtool -i/-k/-l/-x` would show: `sys::ethtool`), rtnetlink
//! (XDP programs, veth peers, routes as `ip route get` finds them, qdiscs) and /proc/sys/net —
//! never through /sys/class/net (a process that entered a namespace with `setns` still sees the
//! /sys of the namespace sysfs was mounted in, and would report on somebody else's interface of
//! the same name), and never by reading a command's text.
//!
//! The native-XDP check really attaches a program (the baseline `base_pass`, which passes every
//! packet) and detaches it at once: only the driver knows whether it can, and the error it gives
//! is the one `anypop run` would get. An interface that already has an XDP program is not probed,
//! since replacing that program would disrupt its traffic.
//!
//! Each check is a pure function (`*_check`): facts in, a verdict and a runnable fix out, so the
//! verdicts are unit-tested without a kernel. The functions around them gather the facts.
//!
//! Where things are:
//! - `report`: the verdicts, checks, groups and the report's text and JSON.
//! - `kernel`: the kernel group (version, BTF, bpffs, privileges, loading, JIT).
//! - `interface`: each interface's group (exists, native XDP, veth peer, MTU); `nic` holds its
//!   offload and RX-queue checks (facts named as ethtool names them), `veth` the veth peer's.
//! - `node`: the node's group (forwarding, accept_local, its addresses, routes to the backends,
//!   clsact before TCX).
//! - `parse` (tests only): readers of `ethtool` and `ip route get` output, to hold the kernel's
//!   answers against the tools' and to turn output captured on real NICs into facts.
mod interface;
mod kernel;
mod nic;
mod node;
#[cfg(test)]
mod parse;
mod report;
mod veth;

pub use interface::{ExistingXdp, Probe, driver_of, mtu_check, native_xdp_check};
pub use kernel::{
    bpffs_check, btf_check, jit_check, kernel_version_check, parse_cap_eff, parse_kernel_version,
    privilege_check,
};
pub use nic::{Channels, Feature, ethtool_k, has_rss_table, offload_checks, queue_check};
pub use node::{
    RouteAnswer, accept_local_check, backend_forwarding_check, backend_route_check, clsact_check,
    local_address_check, pop_forwarding_check, sysctl_key,
};
pub use report::{Check, Group, Report, Verdict};

use std::path::PathBuf;

use anyhow::bail;

use crate::config::{self, Network, Node};
use interface::{IfaceContext, NodeFacts, interface_checks};
use kernel::kernel_checks;
use node::node_checks;

/// The oldest kernel anypop's programs load on: the edge program's rule walk uses `bpf_loop`
/// (5.17); everything else it needs (BPF atomics, `bpf_fib_lookup`, devmap redirects) is older.
pub const MIN_KERNEL: (u32, u32) = (5, 17);
/// From here on the backend's `dsr` attaches through TCX and needs no `clsact` qdisc.
pub const TCX_KERNEL: (u32, u32) = (6, 6);
/// The outer IPv4 header a POP puts in front of every forwarded packet.
pub const IPIP_OVERHEAD: u32 = 20;
/// The player-side MTU games and the internet use; the POP→backend path needs this + 20.
pub const PLAYER_MTU: u32 = 1500;

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
            let net = config::load(path)?;
            let node = net.node(name)?.clone();
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

pub(super) fn online_cpus() -> u32 {
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 { 1 } else { n as u32 }
}

/// An error and its causes on one line (aya's attach errors keep the errno in the source).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
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
pub(super) fn one_line(s: &str, max: usize) -> String {
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
    fn one_line_folds_and_cuts() {
        assert_eq!(one_line("a\n\n  b  \n", 100), "a; b");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
