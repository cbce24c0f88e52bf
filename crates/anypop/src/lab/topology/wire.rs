//! The lab's wiring: links, addresses, routes, sysctls and the router's XDP, the anycast route
//! that a flap moves, and interface facts read inside a namespace.
use anyhow::bail;

use super::{Lab, MAX_PLAYERS, VIP, player_addr};
use crate::{
    dataplane::baseline::Baseline,
    lab::netns::{Netns, veth},
};

impl Lab {
    /// Links, addresses, routes and sysctls.
    pub(super) fn wire(&mut self) -> anyhow::Result<()> {
        let t = self.topology;
        veth(&self.players, "p0", &self.router, "r-p")?;
        let mut plan: Vec<(&Netns, String)> = vec![
            (&self.players, "ip addr add 100.64.0.2/24 dev p0".into()),
            (&self.players, "ip route add default via 100.64.0.1".into()),
            (&self.router, "ip addr add 100.64.0.1/24 dev r-p".into()),
            (
                &self.router,
                "sysctl -q -w net.ipv4.conf.all.forwarding=1".into(),
            ),
            (
                &self.router,
                "sysctl -q -w net.ipv4.conf.all.rp_filter=0".into(),
            ),
            // ECMP by the 5-tuple: players spread over the POPs as they do on the internet.
            (
                &self.router,
                "sysctl -q -w net.ipv4.fib_multipath_hash_policy=1".into(),
            ),
        ];
        for i in 0..MAX_PLAYERS {
            plan.push((
                &self.players,
                format!("ip addr add {}/24 dev p0", player_addr(i)),
            ));
        }
        for i in 1..=t.pops {
            let pop = &self.pops[i - 1];
            veth(&self.router, &format!("r-p{i}"), pop, &format!("pop{i}-in"))?;
            veth(
                &self.attacker,
                &format!("at{i}"),
                pop,
                &format!("pop{i}-tr"),
            )?;
            plan.extend([
                (
                    &self.router,
                    format!("ip addr add 10.0.{i}.1/24 dev r-p{i}"),
                ),
                (pop, format!("ip addr add 10.0.{i}.2/24 dev pop{i}-in")),
                (pop, format!("ip addr add 10.2.{i}.2/24 dev pop{i}-tr")),
                (pop, format!("ip route add default via 10.0.{i}.1")),
                (pop, "sysctl -q -w net.ipv4.conf.all.forwarding=1".into()),
                (
                    pop,
                    format!("sysctl -q -w net.ipv4.conf.pop{i}-in.forwarding=1"),
                ),
                (
                    pop,
                    format!("sysctl -q -w net.ipv4.conf.pop{i}-tr.forwarding=1"),
                ),
                (
                    &self.attacker,
                    format!("ip addr add 10.2.{i}.1/24 dev at{i}"),
                ),
            ]);
        }
        for j in 1..=t.backends {
            let be = &self.backends[j - 1];
            veth(&self.router, &format!("r-b{j}"), be, &format!("be{j}-in"))?;
            plan.extend([
                (
                    &self.router,
                    format!("ip addr add 10.1.{j}.1/24 dev r-b{j}"),
                ),
                (be, format!("ip addr add 10.1.{j}.2/24 dev be{j}-in")),
                (be, format!("ip route add default via 10.1.{j}.1")),
                (be, "sysctl -q -w net.ipv4.conf.all.forwarding=1".into()),
                (
                    be,
                    format!("sysctl -q -w net.ipv4.conf.be{j}-in.forwarding=1"),
                ),
                (be, "sysctl -q -w net.ipv4.conf.all.rp_filter=0".into()),
                (
                    be,
                    format!("sysctl -q -w net.ipv4.conf.be{j}-in.rp_filter=0"),
                ),
            ]);
        }
        // Every router interface: no reverse-path filter (replies from the VIP arrive from the
        // backends, while the route to the VIP points at the POPs).
        let router_ifs: Vec<String> = std::iter::once("r-p".to_string())
            .chain((1..=t.pops).map(|i| format!("r-p{i}")))
            .chain((1..=t.backends).map(|j| format!("r-b{j}")))
            .collect();
        for ifname in &router_ifs {
            plan.push((
                &self.router,
                format!("sysctl -q -w net.ipv4.conf.{ifname}.rp_filter=0"),
            ));
        }
        // veth leaves TX checksums to hardware that does not exist; once XDP rewrites a frame
        // nobody completes them. Real NICs put complete checksums on the wire, so we do too.
        plan.push((&self.players, "ethtool -K p0 tx off".into()));
        for ifname in &router_ifs {
            plan.push((&self.router, format!("ethtool -K {ifname} tx off")));
        }
        for i in 1..=t.pops {
            plan.push((&self.pops[i - 1], format!("ethtool -K pop{i}-in tx off")));
        }
        for j in 1..=t.backends {
            plan.push((&self.backends[j - 1], format!("ethtool -K be{j}-in tx off")));
        }
        for (ns, cmd) in plan {
            ns.exec(&cmd.split_whitespace().collect::<Vec<_>>())?;
        }
        self.route_via(&(1..=t.pops).collect::<Vec<_>>())?;
        let pops = t.pops;
        self.router_xdp = Some(self.router.run(move || -> anyhow::Result<Baseline> {
            let mut b = Baseline::load()?;
            for i in 1..=pops {
                b.attach("base_pass", &format!("r-p{i}"))?;
            }
            Ok(b)
        })??);
        Ok(())
    }

    /// Points the router's route to the VIP at these POPs (1-based), equal cost: `[1, 2]` is the
    /// normal anycast, `[2]` is POP 1 withdrawn (a route flap moves its players to POP 2).
    pub fn route_via(&self, pops: &[usize]) -> anyhow::Result<()> {
        if pops.is_empty() || pops.iter().any(|&i| i == 0 || i > self.topology.pops) {
            bail!("route_via: POPs are numbered 1..={}", self.topology.pops);
        }
        let mut cmd: Vec<String> = ["ip", "route", "replace", &format!("{VIP}/32")]
            .map(String::from)
            .to_vec();
        if pops.len() == 1 {
            let i = pops[0];
            cmd.extend(
                ["via", &format!("10.0.{i}.2"), "dev", &format!("r-p{i}")].map(String::from),
            );
        } else {
            for &i in pops {
                cmd.extend(
                    [
                        "nexthop",
                        "via",
                        &format!("10.0.{i}.2"),
                        "dev",
                        &format!("r-p{i}"),
                    ]
                    .map(String::from),
                );
            }
        }
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.router.exec(&refs)?;
        Ok(())
    }

    /// Interface index of `ifname` in `ns`.
    pub fn ifindex(ns: &Netns, ifname: &str) -> anyhow::Result<u32> {
        let name = ifname.to_owned();
        ns.run(move || crate::sys::iface::ifindex(&name, "lab"))?
    }

    /// The MAC address of `ifname` in `ns`.
    pub fn mac(ns: &Netns, ifname: &str) -> anyhow::Result<[u8; 6]> {
        let name = ifname.to_owned();
        ns.run(move || crate::sys::iface::mac_of(&name))?
    }
}
