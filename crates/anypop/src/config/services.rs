//! `[[profile]]` and `[[service]]` tables, and the rate limits both carry.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use toml::Spanned;

use super::{
    Limit, Node, Profile, Protocol, Role, Service,
    names::{NAME_RULE, check_name, excerpt},
    nodes::unusable_address,
    raw::{RawProfile, RawService},
    validate::Checker,
    values::{parse_bps, parse_duration, parse_ports, parse_protocol},
};
use anypop_common::layout::MAX_SERVICES;

/// The valid items of a section, and every name it declares (valid or not) with its line, so a
/// reference to an item that has problems of its own is not reported as unknown as well.
pub(super) struct Checked<T> {
    pub(super) items: Vec<T>,
    pub(super) lines: HashMap<String, usize>,
}

/// Checks a name and that it is the first of its kind; `kind` is "service", "profile", "rule".
pub(super) fn check_unique_name(
    c: &mut Checker,
    lines: &mut HashMap<String, usize>,
    name: &Spanned<String>,
    line: usize,
    item: &str,
    kind: &str,
) {
    if let Err(why) = check_name(name.get_ref()) {
        c.at(name, item, "name", format!("{why}; {NAME_RULE}"));
    }
    if let Some(prev) = lines.insert(name.get_ref().clone(), line) {
        c.at(
            name,
            item,
            "name",
            format!("duplicate {kind} name (first defined on line {prev})"),
        );
    }
}

/// Token bucket fields shared by service limits and profiles.
fn check_limit(
    c: &mut Checker,
    item: &str,
    line: usize,
    pps: &Option<Spanned<i64>>,
    bps: &Option<Spanned<toml::Value>>,
    burst: &Option<Spanned<f64>>,
    block: &Option<Spanned<String>>,
) -> Option<Limit> {
    let problems_before = c.problems.len();
    let pps_v = match pps {
        Some(p) if *p.get_ref() <= 0 => {
            c.at(
                p,
                item,
                "pps",
                "must be above zero; remove it to have no packet limit",
            );
            None
        }
        Some(p) => Some(*p.get_ref() as u64),
        None => None,
    };
    let bps_v = bps.as_ref().and_then(|b| match parse_bps(b.get_ref()) {
        Ok(v) => Some(v),
        Err(e) => {
            c.at(b, item, "bps", e);
            None
        }
    });
    if pps.is_none() && bps.is_none() {
        c.push(
            line,
            item,
            "limit",
            "has neither pps nor bps; set at least one (e.g. pps = 300)",
        );
    }
    let burst_v = burst.as_ref().map(|b| *b.get_ref()).unwrap_or(1.0);
    if let Some(b) = burst {
        if !(burst_v > 0.0 && burst_v <= 3600.0) {
            c.at(
                b,
                item,
                "burst",
                "must be above 0 and at most 3600 (seconds of traffic at the rate)",
            );
        } else if let Some(p) = pps_v
            && burst_v * (p as f64) < 1.0
        {
            c.at(
                b,
                item,
                "burst",
                format!(
                    "burst × pps = {} is below one packet; raise burst to at least {}",
                    burst_v * p as f64,
                    1.0 / p as f64
                ),
            );
        }
    }
    if let Some(bv) = bps_v
        && burst_v * (bv as f64) / 8.0 < 1500.0
    {
        let l = burst
            .as_ref()
            .map(|b| c.line(b.span().start))
            .unwrap_or(line);
        c.push(
            l,
            item,
            "burst",
            "burst × bps is below one full-size packet (1500 bytes); raise burst or bps",
        );
    }
    let block_v = block
        .as_ref()
        .and_then(|b| match parse_duration(b.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                c.at(b, item, "block", e);
                None
            }
        });
    (c.problems.len() == problems_before).then_some(Limit {
        pps: pps_v,
        bps: bps_v,
        burst: burst_v,
        block: block_v,
    })
}

pub(super) fn check_profiles(c: &mut Checker, raw: &[Spanned<RawProfile>]) -> Checked<Profile> {
    let mut items = Vec::new();
    let mut lines = HashMap::new();
    for p in raw {
        let line = c.line(p.span().start);
        let p = p.get_ref();
        let item = format!("profile {}", excerpt(p.name.get_ref()));
        check_unique_name(c, &mut lines, &p.name, line, &item, "profile");
        if let Some(limit) = check_limit(c, &item, line, &p.pps, &p.bps, &p.burst, &p.block) {
            items.push(Profile {
                name: p.name.get_ref().clone(),
                limit,
                line,
            });
        }
    }
    Checked { items, lines }
}

/// The ports each (VIP, protocol) is served on so far: disjoint ranges by their first port, with
/// the service serving them. Ranges, not ports: 64 services × "1-65535" would be 4 million
/// entries, and a hostile file of many such services far more.
#[derive(Default)]
struct Claims(HashMap<(IpAddr, &'static str), PortRanges>);

/// Disjoint port ranges: first port → (last port, service).
type PortRanges = BTreeMap<u16, (u16, String)>;

impl Claims {
    /// Claims `ranges` for `name`; returns the first port some other service already serves,
    /// with that service's name. Ranges of `name` that overlap another's are not claimed.
    fn claim(
        &mut self,
        key: (IpAddr, &'static str),
        ranges: &[(u16, u16)],
        name: &str,
    ) -> Option<(u16, String)> {
        let claimed = self.0.entry(key).or_default();
        let mut own = ranges.to_vec();
        own.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::new();
        for (lo, hi) in own {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        for (lo, hi) in merged {
            let covering = claimed
                .range(..=lo)
                .next_back()
                .filter(|(_, (end, _))| *end >= lo)
                .map(|(_, (_, owner))| (lo, owner));
            let inside = || {
                (lo < hi)
                    .then(|| claimed.range(lo + 1..=hi).next())
                    .flatten()
                    .map(|(start, (_, owner))| (*start, owner))
            };
            match covering.or_else(inside) {
                // A second service of the same name: its name is already refused.
                Some((_, owner)) if owner == name => {}
                Some((port, owner)) => return Some((port, owner.clone())),
                None => {
                    claimed.insert(lo, (hi, name.to_owned()));
                }
            }
        }
        None
    }
}

/// The nodes, looked up by name (backends) and by address (VIPs may not be one).
struct NodeIndex<'a> {
    by_name: HashMap<&'a str, &'a Node>,
    /// The first node (in file order) with each address or tunnel source.
    by_address: HashMap<IpAddr, &'a Node>,
}

impl<'a> NodeIndex<'a> {
    fn new(nodes: &'a [Node]) -> NodeIndex<'a> {
        let mut by_address = HashMap::new();
        for n in nodes {
            for a in [n.address, n.tunnel_source].into_iter().flatten() {
                by_address.entry(IpAddr::V4(a)).or_insert(n);
            }
        }
        NodeIndex {
            by_name: nodes.iter().map(|n| (n.name.as_str(), n)).collect(),
            by_address,
        }
    }
}

pub(super) fn check_services(
    c: &mut Checker,
    raw: &[Spanned<RawService>],
    nodes: &[Node],
) -> Checked<Service> {
    let mut items = Vec::new();
    let mut lines = HashMap::new();
    let mut claimed = Claims::default();
    let nodes = NodeIndex::new(nodes);
    for s in raw {
        let line = c.line(s.span().start);
        let s = s.get_ref();
        let item = format!("service {}", excerpt(s.name.get_ref()));
        check_unique_name(c, &mut lines, &s.name, line, &item, "service");
        if let Some(service) = check_service(c, s, (line, &item), &nodes, &mut claimed) {
            items.push(service);
        }
    }
    if items.len() > MAX_SERVICES as usize {
        c.push(
            0,
            "",
            "service",
            format!(
                "{} services; at most {MAX_SERVICES} are supported",
                items.len()
            ),
        );
    }
    Checked { items, lines }
}

fn check_service(
    c: &mut Checker,
    s: &RawService,
    (line, item): (usize, &str),
    nodes: &NodeIndex,
    claimed: &mut Claims,
) -> Option<Service> {
    let vip = check_vip(c, s, item, nodes);
    let protocol = parse_protocol(s.protocol.get_ref());
    if protocol.is_none() {
        c.at(
            &s.protocol,
            item,
            "protocol",
            format!(
                "{} is not a protocol; use \"udp\", \"tcp\" or \"icmp\"",
                excerpt(s.protocol.get_ref())
            ),
        );
    }
    let mut ports = Vec::new();
    match (protocol, &s.ports) {
        (Some(Protocol::Icmp), Some(p)) => c.at(
            p,
            item,
            "ports",
            "an icmp service takes no ports; remove `ports`",
        ),
        (Some(Protocol::Udp | Protocol::Tcp), None) => c.push(
            line,
            item,
            "ports",
            "missing; a udp/tcp service needs ports = \"N\" or \"LOW-HIGH\"",
        ),
        (_, Some(p)) => match parse_ports(p.get_ref()) {
            Ok(v) => ports = v,
            Err(e) => c.at(p, item, "ports", e),
        },
        _ => {}
    }
    let backends = check_backends(c, s, item, &nodes.by_name);
    let limit = s.limit.as_ref().and_then(|l| {
        let ll = c.line(l.span().start);
        let l = l.get_ref();
        check_limit(c, item, ll, &l.pps, &l.bps, &l.burst, &l.block)
    });
    // An IPv4 service is forwarded to backends: without any, every player would be dropped.
    if matches!(vip, Some(IpAddr::V4(_)))
        && s.backends.as_ref().is_none_or(|b| b.get_ref().is_empty())
    {
        c.push(
            line,
            item,
            "backends",
            "no backend serves this VIP; list at least one role = \"backend\" node in backends = [...]",
        );
    }
    let (vip, protocol) = (vip?, protocol?);
    let name = s.name.get_ref();
    let pr = protocol.name();
    let ranges = if protocol == Protocol::Icmp {
        vec![(0, 0)]
    } else {
        ports.clone()
    };
    if let Some((port, other)) = claimed.claim((vip, pr), &ranges, name) {
        c.at(
            &s.vip,
            item,
            "ports",
            format!(
                "{vip} {pr} port {port} is already served by service {}; each VIP/protocol/port belongs to one service",
                excerpt(&other)
            ),
        );
    }
    Some(Service {
        name: name.clone(),
        vip,
        protocol,
        ports,
        backends,
        limit,
        line,
    })
}

/// The VIP: an address players can send to, and no node's own.
fn check_vip(c: &mut Checker, s: &RawService, item: &str, nodes: &NodeIndex) -> Option<IpAddr> {
    let Ok(vip) = s.vip.get_ref().parse::<IpAddr>() else {
        c.at(
            &s.vip,
            item,
            "vip",
            format!("{} is not an IP address", excerpt(s.vip.get_ref())),
        );
        return None;
    };
    if let Some(why) = unusable_address(vip) {
        c.at(
            &s.vip,
            item,
            "vip",
            format!(
                "{vip} {why}, which players cannot reach; use the anycast address the POPs announce"
            ),
        );
        return None;
    }
    if let Some(n) = nodes.by_address.get(&vip) {
        c.at(
            &s.vip,
            item,
            "vip",
            format!(
                "{vip} is also the address of node {}; a VIP must be an address of its own",
                excerpt(&n.name)
            ),
        );
    }
    Some(vip)
}

/// `backends` and `weights`: backend nodes of this file, each once, weights 0 to 1000.
fn check_backends(
    c: &mut Checker,
    s: &RawService,
    item: &str,
    nodes: &HashMap<&str, &Node>,
) -> Vec<(String, u32)> {
    let mut backends = Vec::new();
    let weights: BTreeMap<String, i64> = s
        .weights
        .as_ref()
        .map(|w| w.get_ref().clone())
        .unwrap_or_default();
    if let Some(b) = &s.backends {
        let mut seen = BTreeSet::new();
        for bn in b.get_ref() {
            let q = excerpt(bn);
            if !seen.insert(bn.clone()) {
                c.at(b, item, "backends", format!("{q} is listed twice"));
                continue;
            }
            match nodes.get(bn.as_str()) {
                None => c.at(
                    b,
                    item,
                    "backends",
                    format!(
                        "{q} is not a node of this file; add a [[node]] with role = \"backend\""
                    ),
                ),
                Some(n) if n.role != Role::Backend => {
                    c.at(b, item, "backends", format!("{q} is a POP, not a backend"))
                }
                Some(_) => {
                    let w = weights.get(bn).copied().unwrap_or(1);
                    if let (false, Some(ws)) = ((0..=1000).contains(&w), &s.weights) {
                        c.at(
                            ws,
                            item,
                            "weights",
                            format!("weight of {q} must be 0 (drain) to 1000"),
                        );
                    }
                    backends.push((bn.clone(), w.clamp(0, 1000) as u32));
                }
            }
        }
    }
    if let Some(w) = &s.weights {
        let listed: BTreeSet<&String> = s.backends.iter().flat_map(|b| b.get_ref()).collect();
        for k in w.get_ref().keys() {
            if !listed.contains(k) {
                c.at(
                    w,
                    item,
                    "weights",
                    format!("{} is not in this service's backends", excerpt(k)),
                );
            }
        }
        // Every backend drained is a state an operator may mean (take no new players while the
        // running games end), so it is a warning, not a refusal.
        if !backends.is_empty() && backends.iter().all(|(_, w)| *w == 0) {
            c.warn(
                c.line(w.span().start),
                item,
                "weights",
                "every backend has weight 0: running flows stay, new players are dropped; give a backend a weight above 0 to take players again",
            );
        }
    }
    backends
}
