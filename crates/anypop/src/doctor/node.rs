//! The node's group: what the network file asks of this machine — IPv4 forwarding and
//! accept_local, its addresses, a route to every backend out of its own interfaces, and (before
//! TCX) the clsact qdisc the backend's dsr program attaches under.
//!
//! Facts come from the kernel: /proc/sys/net for the settings (it answers for the reader's network
//! namespace), a bind for "is this address ours", rtnetlink for routes (`sys::route`, the lookup
//! `ip route get` makes) and qdiscs (`sys::qdisc`).
use std::net::Ipv4Addr;

use super::{Check, Group, TCX_KERNEL, interface::interface_index};
use crate::{
    config::{Network, Node, Role},
    sys::{
        addr::is_local,
        qdisc,
        route::{self, RouteKind},
    },
};

/// The group of node `n` of `net` on this machine; `kernel`: its version, if understood.
pub(super) fn node_checks(net: &Network, n: &Node, kernel: Option<(u32, u32)>) -> Group {
    let role = match n.role {
        Role::Pop => "pop",
        Role::Backend => "backend",
    };
    let mut g = Group::new(format!("node {} ({role})", n.name));
    // The node's interfaces that exist (the interface groups said which do not), with their index.
    let present: Vec<(&String, u32)> = n
        .interfaces
        .iter()
        .filter_map(|i| Some((i, interface_index(i)?)))
        .collect();
    match n.role {
        Role::Pop => {
            for (ifname, _) in &present {
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
                let route = route_to(addr);
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
            for (ifname, index) in &present {
                g.checks.push(backend_forwarding_check(
                    ifname,
                    read_conf(ifname, "forwarding"),
                ));
                if kernel.is_some_and(|v| v < TCX_KERNEL) {
                    g.checks.push(clsact_of(ifname, *index));
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

/// [`clsact_check`] on the qdiscs the kernel lists for the interface. A list that cannot be read
/// counts as no clsact (as when `tc` failed), with the reason in the line.
fn clsact_of(ifname: &str, index: u32) -> Check {
    match qdisc::has_clsact(index) {
        Ok(present) => clsact_check(ifname, present),
        Err(e) => {
            let mut c = clsact_check(ifname, false);
            c.what = format!("{} (the qdiscs could not be read: {e})", c.what);
            c
        }
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

/// The kernel's route to an address (what `ip route get ADDR` prints), as the check needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAnswer {
    /// A route: out of `dev`, through `via` if not on-link; `local` when the address is ours.
    Route {
        dev: String,
        via: Option<String>,
        local: bool,
    },
    /// No route: the kernel's refusal (`RTNETLINK answers: No route to host`), or a route that
    /// drops (`unreachable 10.9.9.9`).
    None(String),
}

/// Asks the kernel for the route to `addr` (RTM_GETROUTE, as `ip route get ADDR` does).
fn route_to(addr: Ipv4Addr) -> RouteAnswer {
    match route::get(addr) {
        Ok(r) if r.kind.drops() => RouteAnswer::None(format!("{} {addr}", r.kind.name())),
        Ok(route::Route {
            kind,
            oif: Some((_, dev)),
            gateway,
        }) => RouteAnswer::Route {
            dev,
            via: gateway.map(|g| g.to_string()),
            local: kind == RouteKind::Local,
        },
        Ok(_) => RouteAnswer::None("the kernel's route names no output interface".into()),
        Err(e) => RouteAnswer::None(e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{Verdict, parse::parse_route_get};
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

    /// The kernel's routes, read as the check reads them, against `ip route get`'s answers on a
    /// namespace made for the test: on-link, through a gateway, local, and refused.
    #[test]
    fn routes_asked_of_the_kernel_are_what_ip_route_get_says() {
        use crate::doctor::parse::ip_route_get;
        use crate::sys::testns::{in_private_netns, sh};
        in_private_netns(|| {
            crate::sys::route::veth_with_gateway();
            for kind in ["unreachable", "blackhole", "prohibit", "throw"] {
                let n = ["unreachable", "blackhole", "prohibit", "throw"]
                    .iter()
                    .position(|k| *k == kind)
                    .unwrap();
                sh(&["ip", "route", "add", kind, &format!("10.9.9.{n}")]);
            }
            for a in [
                "198.51.100.21",
                "10.0.0.7",
                "10.0.0.2",
                "127.0.0.1",
                "10.9.9.0",
                "10.9.9.1",
                "10.9.9.2",
                "10.9.9.3",
                "192.0.2.1",
            ] {
                let a: Ipv4Addr = a.parse().unwrap();
                assert_eq!(route_to(a), ip_route_get(a), "{a}");
            }
            assert_eq!(
                route_to(Ipv4Addr::new(198, 51, 100, 21)),
                RouteAnswer::Route {
                    dev: "r0".into(),
                    via: Some("10.0.0.1".into()),
                    local: false
                }
            );
        });
    }

    #[test]
    fn clsact_as_the_kernel_lists_it() {
        use crate::sys::testns::{in_private_netns, index_of, sh};
        let (before, after) = in_private_netns(|| {
            sh(&[
                "ip", "link", "add", "c0", "type", "veth", "peer", "name", "c1",
            ]);
            let before = clsact_of("c0", index_of("c0"));
            sh(&["tc", "qdisc", "add", "dev", "c0", "clsact"]);
            (before, clsact_of("c0", index_of("c0")))
        });
        assert_eq!(before, clsact_check("c0", false));
        assert_eq!(after, clsact_check("c0", true));
    }
}
