//! Route lookups, asked of the kernel over rtnetlink (RTM_GETROUTE for one address): the same
//! question `ip route get ADDR` asks, answered for the calling thread's network namespace — the
//! interface a packet to ADDR leaves by, its gateway, and whether ADDR is our own.
use std::net::{Ipv4Addr, Ipv6Addr};

use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
};

use super::netlink::{NetlinkError, request};

/// What kind of route the kernel found (`rtm_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// A gateway or directly connected route.
    Unicast,
    /// The address is one of this machine's (delivered locally, out of `lo`).
    Local,
    Broadcast,
    Multicast,
    /// Routes that drop: the kernel usually refuses the lookup instead (EHOSTUNREACH, EINVAL,
    /// EACCES, ENETUNREACH), but may also answer with the route itself.
    Unreachable,
    Blackhole,
    Prohibit,
    Throw,
    Other(u8),
}

impl RouteKind {
    /// The word iproute2 prints for the type (`ip route` output starts with it).
    pub fn name(self) -> String {
        match self {
            RouteKind::Unicast => "unicast".into(),
            RouteKind::Local => "local".into(),
            RouteKind::Broadcast => "broadcast".into(),
            RouteKind::Multicast => "multicast".into(),
            RouteKind::Unreachable => "unreachable".into(),
            RouteKind::Blackhole => "blackhole".into(),
            RouteKind::Prohibit => "prohibit".into(),
            RouteKind::Throw => "throw".into(),
            RouteKind::Other(n) => format!("type {n}"),
        }
    }

    /// True for the kinds that deliver nothing.
    pub fn drops(self) -> bool {
        matches!(
            self,
            RouteKind::Unreachable | RouteKind::Blackhole | RouteKind::Prohibit | RouteKind::Throw
        )
    }
}

/// The next hop a route goes through when the destination is not on-link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gateway {
    V4(Ipv4Addr),
    /// An IPv4 route through an IPv6 next hop (RTA_VIA, RFC 5549).
    V6(Ipv6Addr),
}

impl std::fmt::Display for Gateway {
    /// As `ip route` writes it after `via`, so it can be pasted into an `ip route` command.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gateway::V4(a) => write!(f, "{a}"),
            Gateway::V6(a) => write!(f, "inet6 {a}"),
        }
    }
}

/// The kernel's answer for one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteKind,
    /// The output interface (RTA_OIF), by index and name.
    pub oif: Option<(u32, String)>,
    pub gateway: Option<Gateway>,
}

/// Why a route lookup gave no route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The kernel refused (no route: `RTNETLINK answers: Network is unreachable`), or the
    /// exchange failed.
    #[error("{source}")]
    Netlink {
        #[from]
        source: NetlinkError,
    },
    /// The route's output interface vanished between the lookup and the name query.
    #[error("the route leaves by interface index {index}, which has no name: {source}")]
    InterfaceName {
        index: u32,
        #[source]
        source: std::io::Error,
    },
}

impl RouteError {
    /// The kernel's errno when it refused the lookup.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RouteError::Netlink { source } => source.errno(),
            RouteError::InterfaceName { .. } => None,
        }
    }
}

/// The route the kernel picks for a packet from this machine to `dst` (`ip route get DST`).
pub fn get(dst: Ipv4Addr) -> Result<Route, RouteError> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 32;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    let answer = request(RouteNetlinkMessage::GetRoute(msg), false)?;
    let m = answer
        .into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(m) => Some(m),
            _ => None,
        })
        .ok_or(NetlinkError::NoAnswer)?;
    route_of(&m)
}

fn route_of(m: &RouteMessage) -> Result<Route, RouteError> {
    let kind = match m.header.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local => RouteKind::Local,
        RouteType::Broadcast => RouteKind::Broadcast,
        RouteType::Multicast => RouteKind::Multicast,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Prohibit => RouteKind::Prohibit,
        RouteType::Throw => RouteKind::Throw,
        other => RouteKind::Other(u8::from(other)),
    };
    let mut oif = None;
    let mut gateway = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(Gateway::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gateway = Some(Gateway::V6(*g)),
            RouteAttribute::Via(RouteVia::Inet(g)) => gateway = Some(Gateway::V4(*g)),
            RouteAttribute::Via(RouteVia::Inet6(g)) => gateway = Some(Gateway::V6(*g)),
            _ => {}
        }
    }
    let oif = match oif {
        Some(index) => Some((index, name_of(index)?)),
        None => None,
    };
    Ok(Route { kind, oif, gateway })
}

/// The name of interface `index` in this thread's network namespace (`if_indextoname`, an
/// ioctl on a socket).
fn name_of(index: u32) -> Result<String, RouteError> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(RouteError::InterfaceName {
            index,
            source: std::io::Error::last_os_error(),
        });
    }
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// For route tests here and in doctor, in a namespace the test made: a veth pair `r0`/`r1`, up,
/// with 10.0.0.2/24 on `r0` and 198.51.100.0/24 routed through the gateway 10.0.0.1.
#[cfg(test)]
pub(crate) fn veth_with_gateway() {
    use crate::sys::testns::sh;
    sh(&[
        "ip", "link", "add", "r0", "type", "veth", "peer", "name", "r1",
    ]);
    sh(&["ip", "link", "set", "r0", "up"]);
    sh(&["ip", "link", "set", "r1", "up"]);
    sh(&["ip", "addr", "add", "10.0.0.2/24", "dev", "r0"]);
    sh(&["ip", "route", "add", "198.51.100.0/24", "via", "10.0.0.1"]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testns::{in_private_netns, sh};

    /// [`veth_with_gateway`] and two routes that drop.
    fn lab() {
        veth_with_gateway();
        sh(&["ip", "route", "add", "unreachable", "10.9.9.9"]);
        sh(&["ip", "route", "add", "blackhole", "10.9.9.10"]);
    }

    #[test]
    fn routes_as_the_kernel_picks_them() {
        in_private_netns(|| {
            lab();
            let via = get(Ipv4Addr::new(198, 51, 100, 21)).unwrap();
            assert_eq!(via.kind, RouteKind::Unicast);
            assert_eq!(via.oif.as_ref().unwrap().1, "r0");
            assert_eq!(via.gateway, Some(Gateway::V4(Ipv4Addr::new(10, 0, 0, 1))));
            let on_link = get(Ipv4Addr::new(10, 0, 0, 7)).unwrap();
            assert_eq!(on_link.oif.as_ref().unwrap().1, "r0");
            assert_eq!(on_link.gateway, None);
            let local = get(Ipv4Addr::new(10, 0, 0, 2)).unwrap();
            assert_eq!(local.kind, RouteKind::Local);
            assert_eq!(local.oif.as_ref().unwrap(), &(1, "lo".to_string()));
            let e = get(Ipv4Addr::new(10, 9, 9, 9)).unwrap_err();
            assert_eq!(e.errno(), Some(libc::EHOSTUNREACH), "{e}");
            assert_eq!(e.to_string(), "RTNETLINK answers: No route to host");
            let e = get(Ipv4Addr::new(10, 9, 9, 10)).unwrap_err();
            assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
            let e = get(Ipv4Addr::new(8, 8, 8, 8)).unwrap_err();
            assert_eq!(e.errno(), Some(libc::ENETUNREACH), "{e}");
            assert_eq!(e.to_string(), "RTNETLINK answers: Network is unreachable");
        });
    }

    #[test]
    fn gateways_are_written_as_ip_route_reads_them() {
        assert_eq!(
            Gateway::V4(Ipv4Addr::new(10, 0, 0, 1)).to_string(),
            "10.0.0.1"
        );
        assert_eq!(
            Gateway::V6("fe80::1".parse().unwrap()).to_string(),
            "inet6 fe80::1"
        );
        assert!(RouteKind::Blackhole.drops() && !RouteKind::Local.drops());
        assert_eq!(RouteKind::Other(42).name(), "type 42");
    }
}
