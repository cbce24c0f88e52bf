//! The programs under test and the baselines beside them: attaching each to `g1` (bare XDP
//! programs, the `edge` through the daemon's own start, xdp-filter, nftables), removing it, and
//! reading the DUT's own count of the verdict it gave.
use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::anyhow;

use super::{
    Dut, Traffic,
    measure::{Bench, stat},
    sched::enter,
    setup::FLOOD_SOURCE,
};
use crate::{daemon::Pop, dataplane::baseline::Baseline, lab::netns::run_cmd};
use anypop_common::verdict::Reason;

/// The packets counted by the nftables rule's counter.
fn nft_counter(family: &str, table: &str) -> anyhow::Result<u64> {
    let out = run_cmd(&["nft", "list", "table", family, table])?;
    let n = out
        .split_once("counter packets ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no counter in nft table {table}: {out}"))?;
    Ok(n)
}

/// A DUT attached to `g1`. Dropping a `Base` or an `Edge` detaches it; xdp-filter and the nft
/// table are removed by [`Attached::detach`], and in any case with the namespace.
pub(super) enum Attached {
    Base(Baseline, &'static str),
    Edge(Box<Pop>),
    XdpFilter,
    /// nft family and table name.
    Nft(&'static str, String),
}

impl Bench {
    pub(super) fn attach(&self, dut: Dut) -> anyhow::Result<Attached> {
        enter(&self.dut_ns)?;
        Ok(match dut {
            Dut::BareDrop | Dut::BareDropRead | Dut::BareTx => {
                let name = match dut {
                    Dut::BareDrop => "base_drop",
                    Dut::BareDropRead => "base_drop_read",
                    _ => "base_tx",
                };
                let mut b = Baseline::load()?;
                b.attach(name, "g1")?;
                Attached::Base(b, name)
            }
            Dut::Edge => Attached::Edge(Box::new(Pop::start_with(&self.net, "pop-1", &self.pins)?)),
            Dut::XdpFilter => {
                // As in `anypop bench`: a fresh bpffs in `ip netns exec`'s private mount
                // namespace holds xdp-filter's pins, so nothing leaks into the host's bpffs;
                // the attachment (netlink) outlives it and is removed with `ip link`.
                let script = format!(
                    "mount -t bpf bpf /sys/fs/bpf && xdp-filter load -m native -f ipv4 g1 && xdp-filter ip {} -m src",
                    Ipv4Addr::from(FLOOD_SOURCE)
                );
                run_cmd(&["ip", "netns", "exec", &self.dut_ns, "sh", "-c", &script])?;
                Attached::XdpFilter
            }
            Dut::Nftables | Dut::NftRaw => {
                let (family, chain) = if dut == Dut::Nftables {
                    (
                        "netdev",
                        "{ type filter hook ingress device g1 priority 0 ; }",
                    )
                } else {
                    ("ip", "{ type filter hook prerouting priority raw ; }")
                };
                let table = format!("anypop_tput_{}", std::process::id());
                run_cmd(&["nft", "add", "table", family, &table])?;
                let a = Attached::Nft(family, table.clone());
                run_cmd(&["nft", "add", "chain", family, &table, "flood", chain])?;
                run_cmd(&[
                    "nft",
                    "add",
                    "rule",
                    family,
                    &table,
                    "flood",
                    "ip",
                    "saddr",
                    "198.18.0.0/15",
                    "counter",
                    "drop",
                ])?;
                a
            }
        })
    }

    pub(super) fn detach(&self, a: Attached) -> anyhow::Result<()> {
        enter(&self.dut_ns)?;
        match a {
            Attached::Base(b, _) => drop(b),
            Attached::Edge(pop) => pop.stop(false)?,
            Attached::XdpFilter => {
                run_cmd(&["ip", "link", "set", "dev", "g1", "xdpdrv", "off"])?;
            }
            Attached::Nft(family, table) => {
                run_cmd(&["nft", "delete", "table", family, &table])?;
            }
        }
        Ok(())
    }

    /// The DUT's own count of the verdict it should give to `traffic`.
    pub(super) fn counted(
        &self,
        a: &mut Attached,
        traffic: Traffic,
        g1: &HashMap<String, u64>,
    ) -> anyhow::Result<u64> {
        Ok(match a {
            Attached::Base(_, "base_tx") => stat(g1, "rx_queue_0_xdp_tx"),
            Attached::Base(..) | Attached::XdpFilter => stat(g1, "rx_queue_0_xdp_drops"),
            Attached::Edge(pop) => {
                let s = pop.snapshot()?;
                if traffic.forward() {
                    s.get(Reason::FwdIpip).packets
                } else {
                    s.get(Reason::DropRule).packets
                }
            }
            Attached::Nft(family, table) => nft_counter(family, table)?,
        })
    }
}
