//! `[[node]]` tables: names, roles, interfaces and the IPv4 addresses tunnels run between.
use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
};

use toml::Spanned;

use super::{
    Node, Role,
    names::{IFNAME_RULE, NAME_RULE, check_interface_name, check_name, excerpt},
    raw::RawNode,
    validate::{Checker, parse_xdp_mode},
};
use anypop_common::layout::MAX_BACKENDS;

/// Why an address cannot be a VIP, a tunnel source or a backend address, if it cannot: none of
/// these can be sent to (or from) across a network.
pub(super) fn unusable_address(a: IpAddr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("is the unspecified address")
    } else if a.is_loopback() {
        Some("is a loopback address, which never leaves its host")
    } else if a.is_multicast() {
        Some("is a multicast address")
    } else if a == IpAddr::V4(Ipv4Addr::BROADCAST) {
        Some("is the broadcast address")
    } else {
        None
    }
}

/// Checks every node. Returns the nodes and, for each, the line of its address (POP:
/// `tunnel_source`, backend: `address`) for [`check_addresses`].
pub(super) fn check_nodes(c: &mut Checker, raw: &[Spanned<RawNode>]) -> (Vec<Node>, Vec<usize>) {
    let mut nodes = Vec::new();
    let mut address_lines = Vec::new();
    let mut node_lines: HashMap<&str, usize> = HashMap::new();
    let mut pops_fields = Vec::new();
    for n in raw {
        let line = c.line(n.span().start);
        let n = n.get_ref();
        let name = n.name.get_ref();
        let item = format!("node {}", excerpt(name));
        if let Err(why) = check_name(name) {
            c.at(&n.name, &item, "name", format!("{why}; {NAME_RULE}"));
        }
        if let Some(prev) = node_lines.insert(name, line) {
            c.at(
                &n.name,
                &item,
                "name",
                format!(
                    "duplicate node name (first defined on line {prev}); node names must be unique"
                ),
            );
        }
        let role = match n.role.get_ref().as_str() {
            "pop" => Role::Pop,
            "backend" => Role::Backend,
            other => {
                c.at(
                    &n.role,
                    &item,
                    "role",
                    format!(
                        "{} is not a role; use \"pop\" or \"backend\"",
                        excerpt(other)
                    ),
                );
                continue;
            }
        };
        let mut node = Node {
            name: name.clone(),
            role,
            interfaces: Vec::new(),
            tunnel_source: None,
            address: None,
            xdp_mode: n
                .xdp_mode
                .as_ref()
                .and_then(|m| parse_xdp_mode(c, m, &item)),
            pops: n
                .pops
                .as_ref()
                .map(|p| p.get_ref().clone())
                .unwrap_or_default(),
            tunnel_mode: false,
            line,
        };
        let address = match role {
            Role::Pop => check_pop(c, n, &item, &mut node),
            Role::Backend => check_backend(c, n, &item, &mut node),
        };
        address_lines.push(address.map(|a| c.line(a.span().start)).unwrap_or(line));
        if let Some(p) = &n.pops {
            pops_fields.push((nodes.len(), p));
        }
        nodes.push(node);
    }
    // Backends' `pops` must name POPs.
    let pop_names: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.role == Role::Pop)
        .map(|n| n.name.as_str())
        .collect();
    for (i, p) in pops_fields {
        for name in p.get_ref() {
            if !pop_names.contains(name.as_str()) {
                c.at(
                    p,
                    &format!("node {}", excerpt(&nodes[i].name)),
                    "pops",
                    format!("{} is not a POP node of this file", excerpt(name)),
                );
            }
        }
    }
    if nodes.iter().filter(|n| n.role == Role::Backend).count() > MAX_BACKENDS as usize {
        c.push(
            0,
            "",
            "node",
            format!("more than {MAX_BACKENDS} backends; split the network"),
        );
    }
    (nodes, address_lines)
}

/// A POP's fields; returns its `tunnel_source` field.
fn check_pop<'r>(
    c: &mut Checker,
    n: &'r RawNode,
    item: &str,
    node: &mut Node,
) -> Option<&'r Spanned<String>> {
    match &n.interfaces {
        Some(i) if !i.get_ref().is_empty() => {
            check_interfaces(c, i, item, "interfaces", i.get_ref());
            node.interfaces = i.get_ref().clone();
        }
        Some(i) => c.at(
            i,
            item,
            "interfaces",
            "is empty; list the POP's interfaces, e.g. [\"eth0\"]",
        ),
        None => c.push(
            node.line,
            item,
            "interfaces",
            "missing; a POP needs interfaces = [\"eth0\", …]",
        ),
    }
    if let Some(i) = &n.interface {
        c.at(
            i,
            item,
            "interface",
            "a POP takes `interfaces` (a list), not `interface`",
        );
    }
    match &n.tunnel_source {
        Some(t) => {
            node.tunnel_source = parse_unicast_v4(
                c,
                t,
                item,
                "tunnel_source",
                "give the address this POP sends its tunnels from",
            )
        }
        None => c.push(
            node.line,
            item,
            "tunnel_source",
            "missing; a POP needs the IPv4 source of its IPIP packets",
        ),
    }
    if let Some(a) = &n.address {
        c.at(
            a,
            item,
            "address",
            "only backends take `address`; a POP uses `tunnel_source`",
        );
    }
    if let Some(m) = &n.mode {
        c.at(m, item, "mode", "only backends take `mode`");
    }
    n.tunnel_source.as_ref()
}

/// A backend's fields; returns its `address` field.
fn check_backend<'r>(
    c: &mut Checker,
    n: &'r RawNode,
    item: &str,
    node: &mut Node,
) -> Option<&'r Spanned<String>> {
    match (&n.interface, &n.interfaces) {
        (Some(i), None) => {
            check_interfaces(c, i, item, "interface", std::slice::from_ref(i.get_ref()));
            node.interfaces = vec![i.get_ref().clone()];
        }
        (None, Some(i)) if i.get_ref().len() == 1 => {
            check_interfaces(c, i, item, "interfaces", i.get_ref());
            node.interfaces = i.get_ref().clone()
        }
        (None, None) => c.push(
            node.line,
            item,
            "interface",
            "missing; a backend needs interface = \"eth0\"",
        ),
        (_, Some(i)) => c.at(
            i,
            item,
            "interfaces",
            "a backend takes one `interface = \"eth0\"`",
        ),
    }
    if let Some(m) = &n.mode {
        match m.get_ref().as_str() {
            "native" => {}
            "tunnel" => node.tunnel_mode = true,
            other => c.at(
                m,
                item,
                "mode",
                format!(
                    "{} is not a backend mode; use \"native\" or \"tunnel\"",
                    excerpt(other)
                ),
            ),
        }
    }
    match &n.address {
        Some(a) => {
            node.address = parse_unicast_v4(
                c,
                a,
                item,
                "address",
                "give the address POPs tunnel to for this backend",
            )
        }
        None => c.push(
            node.line,
            item,
            "address",
            "missing; a backend needs the IPv4 address POPs tunnel to",
        ),
    }
    if let Some(t) = &n.tunnel_source {
        c.at(t, item, "tunnel_source", "only POPs take `tunnel_source`");
    }
    n.address.as_ref()
}

/// Interface names as the kernel takes them, each once per node.
fn check_interfaces<T>(
    c: &mut Checker,
    span: &Spanned<T>,
    item: &str,
    field: &str,
    names: &[String],
) {
    let mut seen = BTreeSet::new();
    for name in names {
        if let Err(why) = check_interface_name(name) {
            c.at(
                span,
                item,
                field,
                format!("{} {why}; {IFNAME_RULE}", excerpt(name)),
            );
        } else if !seen.insert(name) {
            c.at(
                span,
                item,
                field,
                format!(
                    "{} is listed twice; name each interface once",
                    excerpt(name)
                ),
            );
        }
    }
}

/// An IPv4 address that can be tunnelled to or from.
fn parse_unicast_v4(
    c: &mut Checker,
    s: &Spanned<String>,
    item: &str,
    field: &str,
    fix: &str,
) -> Option<Ipv4Addr> {
    let Ok(a) = s.get_ref().parse::<Ipv4Addr>() else {
        c.at(
            s,
            item,
            field,
            format!("{} is not an IPv4 address", excerpt(s.get_ref())),
        );
        return None;
    };
    if let Some(why) = unusable_address(IpAddr::V4(a)) {
        c.at(s, item, field, format!("{a} {why}; {fix}"));
        return None;
    }
    Some(a)
}

/// One address per node: a POP's `tunnel_source` tells backends which POP a packet came from
/// (`pops`), a backend's `address` is where POPs send its players. Two backends at one address,
/// or two POPs with one source, are refused. A backend at a POP's own tunnel source would have
/// that POP tunnel to itself: refused if a service lists that backend (`served`), a warning if
/// none does (a test may run both nodes on one host).
pub(super) fn check_addresses(
    c: &mut Checker,
    nodes: &[Node],
    address_lines: &[usize],
    served: &BTreeSet<&str>,
) {
    let field = |n: &Node| match n.role {
        Role::Pop => "tunnel_source",
        Role::Backend => "address",
    };
    let mut holders: HashMap<Ipv4Addr, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let Some(addr) = n.tunnel_source.or(n.address) else {
            continue;
        };
        let earlier = holders.entry(addr).or_default();
        // The first node of the same role, else the first of the other.
        let j = earlier
            .iter()
            .copied()
            .find(|&j| nodes[j].role == n.role)
            .or(earlier.first().copied());
        earlier.push(i);
        let Some(j) = j else {
            continue;
        };
        let other = &nodes[j];
        let (item, line) = (format!("node {}", excerpt(&n.name)), address_lines[i]);
        let same = format!(
            "{addr} is also the {} of node {} (line {})",
            field(other),
            excerpt(&other.name),
            address_lines[j]
        );
        match (n.role, other.role) {
            (Role::Backend, Role::Backend) => c.push(
                line,
                &item,
                field(n),
                format!("{same}; each backend needs its own address, POPs reach backends by it"),
            ),
            (Role::Pop, Role::Pop) => c.push(
                line,
                &item,
                field(n),
                format!(
                    "{same}; each POP needs its own tunnel_source, backends tell POPs apart by it"
                ),
            ),
            _ => {
                let backend = if n.role == Role::Backend { n } else { other };
                let msg = format!("{same}: that POP would tunnel to itself");
                if served.contains(backend.name.as_str()) {
                    c.push(
                        line,
                        &item,
                        field(n),
                        format!(
                            "{msg}; give backend {} its own address",
                            excerpt(&backend.name)
                        ),
                    );
                } else {
                    c.warn(
                        line,
                        &item,
                        field(n),
                        format!(
                            "{msg} if a service listed backend {}",
                            excerpt(&backend.name)
                        ),
                    );
                }
            }
        }
    }
}
