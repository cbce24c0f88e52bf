//! What the lab's nodes report: XDP mode and program of an interface, verdict counters from a
//! node's pins, and every drop and error counter along the transit path.
use super::Lab;
use crate::{lab::netns::Netns, telemetry::Snapshot};

/// How an interface runs XDP, as the kernel reports it.
#[derive(Clone, Debug, Default)]
pub struct XdpInfo {
    /// "native", "generic" or "none".
    pub mode: String,
    pub prog_id: u32,
}

impl Lab {
    /// How `ifname` of POP `i` (1-based) runs XDP.
    pub fn xdp_of_pop(&self, i: usize, ifname: &str) -> XdpInfo {
        xdp_info(&self.pops[i - 1], ifname)
    }

    /// Verdict counters of a node (POP or backend), from its pins.
    pub fn verdicts(&self, node: &str) -> anyhow::Result<Snapshot> {
        crate::telemetry::status::pinned_verdicts(&self.pin_dir(node))
    }

    /// Frames the kernel dropped on `ifname` in `ns` (rx + tx, `ip -s`): a veth whose peer could
    /// not keep up with the generator.
    pub fn drops(ns: &Netns, ifname: &str) -> u64 {
        let Ok(out) = ns.exec(&["ip", "-s", "-j", "link", "show", ifname]) else {
            return 0;
        };
        out.match_indices("\"dropped\":")
            .filter_map(|(i, m)| {
                out[i + m.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect::<String>()
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Every drop and error counter of every link in the lab's transit namespaces (router, POPs,
    /// backends), by `node/ifname/counter`: the kernel's `ip -s` rx/tx dropped and veth's own
    /// per-queue drop and XDP error counters, each node's IP-layer discards, and the machine's
    /// input-backlog drops. A loss between two of our programs shows here as the place where it
    /// happened.
    pub fn transit_drop_counters(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        // The CPUs' input backlogs (a veth without NAPI hands frames to its peer through them):
        // one per CPU for the whole machine, not per namespace. Its second column counts frames
        // dropped because the backlog was full.
        if let Ok(softnet) = std::fs::read_to_string("/proc/net/softnet_stat") {
            let dropped: u64 = softnet
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter_map(|v| u64::from_str_radix(v, 16).ok())
                .sum();
            out.insert("machine/softnet/backlog_dropped".to_owned(), dropped);
        }
        let nodes = std::iter::once(&self.router)
            .chain(self.pops.iter())
            .chain(self.backends.iter());
        for ns in nodes {
            // The node's IP layer: frames its kernel found malformed, routed nowhere or discarded.
            if let Ok(snmp) = ns.exec(&["cat", "/proc/net/snmp"]) {
                let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
                if let (Some(names), Some(values)) = (ip.next(), ip.next()) {
                    for (k, v) in names.split_whitespace().zip(values.split_whitespace()) {
                        if matches!(
                            k,
                            "InHdrErrors"
                                | "InAddrErrors"
                                | "InDiscards"
                                | "OutDiscards"
                                | "OutNoRoutes"
                        ) && let Ok(n) = v.parse::<u64>()
                        {
                            out.insert(format!("{}/ip/{k}", ns.name), n);
                        }
                    }
                }
            }
            let Ok(links) = ns.exec(&["ip", "-s", "-j", "link", "show"]) else {
                continue;
            };
            let Ok(links) = serde_json::from_str::<Vec<serde_json::Value>>(&links) else {
                continue;
            };
            for link in links {
                let Some(name) = link["ifname"].as_str() else {
                    continue;
                };
                if name == "lo" {
                    continue;
                }
                for dir in ["rx", "tx"] {
                    if let Some(n) = link["stats64"][dir]["dropped"].as_u64() {
                        out.insert(format!("{}/{name}/{dir}_dropped", ns.name), n);
                    }
                }
                let Ok(stats) = ns.exec(&["ethtool", "-S", name]) else {
                    continue;
                };
                for line in stats.lines() {
                    let Some((key, value)) = line.trim().split_once(':') else {
                        continue;
                    };
                    if !(key.ends_with("drops") || key.ends_with("errors")) {
                        continue;
                    }
                    if let Ok(n) = value.trim().parse::<u64>() {
                        out.insert(format!("{}/{name}/{key}", ns.name), n);
                    }
                }
            }
        }
        out
    }
}

/// XDP mode and program of an interface in `ns`.
fn xdp_info(ns: &Netns, ifname: &str) -> XdpInfo {
    let name = ifname.to_owned();
    let seen = ns
        .run(move || crate::dataplane::links::seen_xdp(&name))
        .ok()
        .flatten();
    match seen {
        None => XdpInfo {
            mode: "none".into(),
            prog_id: 0,
        },
        Some(x) => XdpInfo {
            mode: x.mode().to_string(),
            prog_id: x.prog_id.unwrap_or(0),
        },
    }
}
