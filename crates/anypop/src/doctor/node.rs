//! The node's group: what the network file asks of this machine — IPv4 forwarding and
//! accept_local, its addresses, a route to every backend out of its own interfaces, and (before
//! TCX) the clsact qdisc the backend's dsr program attaches under.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    process::Command,
};

use super::{
    Check, Group, TCX_KERNEL, interface::interface_index, one_line, parse::parse_route_get,
};
use crate::config::{Network, Node, Role};

pub(super) fn node_checks(net: &Network, n: &Node, kernel: Option<(u32, u32)>) -> Group {
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
}
