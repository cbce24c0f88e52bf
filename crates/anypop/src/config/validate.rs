//! Raw network file → validated [`Network`]. Every problem is collected with its line, the item
//! and field it concerns, what is wrong and what to do; nothing stops at the first mistake.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::Duration,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use toml::Spanned;

use super::{
    Action, ConfigError, Defaults, FragmentPolicy, Limit, Network, Node, Problem, Profile,
    Protocol, Role, Rule, Service, XdpModeSetting, raw::*,
};
use anypop_common::layout::{
    MAX_BACKENDS, MAX_PREFIX_SETS, MAX_RULES_TOTAL, MAX_SERVICES, RULES_PER_SERVICE,
};

/// Collects problems while walking the file.
struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn at<T>(&mut self, span: &Spanned<T>, item: &str, field: &str, message: impl Into<String>) {
        let line = self.line(span.span().start);
        self.push(line, item, field, message);
    }

    fn push(&mut self, line: usize, item: &str, field: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            item: item.to_owned(),
            field: field.to_owned(),
            message: message.into(),
        });
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// "N" or "LO-HI" (also a bare integer) → inclusive range within `min..=max`.
pub fn parse_range(v: &toml::Value, min: u64, max: u64) -> Result<(u64, u64), String> {
    let (lo, hi) = match v {
        toml::Value::Integer(i) => (*i, *i),
        toml::Value::String(s) => {
            let s = s.trim();
            match s.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse::<i64>().map_err(|_| {
                        format!("{s:?} is not a range; write LOW-HIGH, e.g. \"{min}-{max}\"")
                    })?,
                    b.trim().parse::<i64>().map_err(|_| {
                        format!("{s:?} is not a range; write LOW-HIGH, e.g. \"{min}-{max}\"")
                    })?,
                ),
                None => {
                    let n = s.parse::<i64>().map_err(|_| {
                        format!("{s:?} is not a number or a range; write N or LOW-HIGH")
                    })?;
                    (n, n)
                }
            }
        }
        other => {
            return Err(format!(
                "expected a number or a \"LOW-HIGH\" string, found {}",
                other.type_str()
            ));
        }
    };
    if lo < min as i64 || hi > max as i64 || lo < 0 {
        return Err(format!("{lo}-{hi} is outside {min}-{max}"));
    }
    if lo > hi {
        return Err(format!(
            "{lo}-{hi} is an empty range (start above end); write LOW-HIGH with LOW <= HIGH"
        ));
    }
    Ok((lo as u64, hi as u64))
}

/// Port specification: one range, or an array of them (services only).
fn parse_ports(v: &toml::Value) -> Result<Vec<(u16, u16)>, String> {
    let items: Vec<&toml::Value> = match v {
        toml::Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if items.is_empty() {
        return Err("empty list; give at least one port or range".into());
    }
    items
        .into_iter()
        .map(|i| parse_range(i, 1, 65535).map(|(a, b)| (a as u16, b as u16)))
        .collect()
}

/// "500ms", "30s", "5m", "1h".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().map_err(|_| {
        format!("{s:?} is not a duration; write e.g. \"500ms\", \"30s\", \"5m\", \"1h\"")
    })?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit {u:?} in {s:?}; use ms, s, m or h")),
    };
    if !(0.0..=86_400.0 * 7.0).contains(&secs) {
        return Err(format!("{s:?} is out of range (0 to 7 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Bits per second: a number, or a string like "4Mbit", "500kbit", "1G".
pub fn parse_bps(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(i) if *i > 0 => Ok(*i as u64),
        toml::Value::Integer(_) => Err("must be above zero".into()),
        toml::Value::String(s) => {
            let t = s.trim();
            let split = t
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: f64 = num
                .parse()
                .map_err(|_| format!("{s:?} is not a rate; write e.g. \"4Mbit\" or 4000000"))?;
            let unit = unit.trim().to_ascii_lowercase();
            let unit = unit
                .strip_suffix("bit")
                .or_else(|| unit.strip_suffix("bps"))
                .unwrap_or(&unit);
            let mult = match unit {
                "" => 1.0,
                "k" => 1e3,
                "m" => 1e6,
                "g" => 1e9,
                _ => {
                    return Err(format!(
                        "unknown unit in {s:?}; use bit, Kbit, Mbit or Gbit"
                    ));
                }
            };
            let v = (n * mult) as u64;
            if v == 0 {
                return Err("must be above zero".into());
            }
            Ok(v)
        }
        other => Err(format!(
            "expected a number or a string like \"4Mbit\", found {}",
            other.type_str()
        )),
    }
}

fn parse_prefix(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(a));
    }
    Err(format!(
        "{s:?} is not a prefix; write e.g. \"198.18.0.0/15\", \"2001:db8::/32\" or an address"
    ))
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
    let mut ok = true;
    let pps_v = match pps {
        Some(p) if *p.get_ref() <= 0 => {
            c.at(
                p,
                item,
                "pps",
                "must be above zero; remove it to have no packet limit",
            );
            ok = false;
            None
        }
        Some(p) => Some(*p.get_ref() as u64),
        None => None,
    };
    let bps_v = match bps {
        Some(b) => match parse_bps(b.get_ref()) {
            Ok(v) => Some(v),
            Err(e) => {
                c.at(b, item, "bps", e);
                ok = false;
                None
            }
        },
        None => None,
    };
    if pps.is_none() && bps.is_none() {
        c.push(
            line,
            item,
            "limit",
            "has neither pps nor bps; set at least one (e.g. pps = 300)",
        );
        ok = false;
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
            ok = false;
        } else if let Some(p) = pps_v
            && burst_v * (p as f64) < 1.0
        {
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
                ok = false;
            }
        }
    }
    if let Some(bv) = bps_v
        && burst_v * (bv as f64) / 8.0 < 1500.0
    {
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
            ok = false;
        }
    }
    let block_v = match block {
        Some(b) => match parse_duration(b.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                c.at(b, item, "block", e);
                ok = false;
                None
            }
        },
        None => None,
    };
    ok.then_some(Limit {
        pps: pps_v,
        bps: bps_v,
        burst: burst_v,
        block: block_v,
    })
}

fn parse_protocol(s: &str) -> Option<Protocol> {
    match s.trim().to_ascii_lowercase().as_str() {
        "udp" => Some(Protocol::Udp),
        "tcp" => Some(Protocol::Tcp),
        "icmp" | "icmpv6" => Some(Protocol::Icmp),
        _ => None,
    }
}

fn parse_tcp_flags(s: &str) -> Result<(u8, u8), String> {
    let mut mask = 0u8;
    let mut value = 0u8;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (neg, name) = match part.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, part),
        };
        let bit = match name.to_ascii_uppercase().as_str() {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ECE" => 0x40,
            "CWR" => 0x80,
            _ => {
                return Err(format!(
                    "unknown flag {name:?}; use FIN SYN RST PSH ACK URG ECE CWR, '!' for must-be-clear, e.g. \"SYN,!ACK\""
                ));
            }
        };
        mask |= bit;
        if !neg {
            value |= bit;
        }
    }
    if mask == 0 {
        return Err("no flags given; e.g. \"SYN,!ACK\"".into());
    }
    Ok((mask, value))
}

/// Reads a prefix file: one prefix per line, `#` comments, blank lines allowed.
fn read_prefix_file(path: &Path) -> Result<Vec<IpNet>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        out.push(parse_prefix(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?);
    }
    Ok(out)
}

fn toml_error(text: &str, origin: &str, e: toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| {
            text[..s.start.min(text.len())]
                .bytes()
                .filter(|&b| b == b'\n')
                .count()
                + 1
        })
        .unwrap_or(0);
    let msg = e.message().trim().to_string();
    let hint = if msg.contains("unknown field") {
        " (a typo? see the README for the fields each table takes)"
    } else {
        ""
    };
    ConfigError::single(origin, line, "", "", format!("{msg}{hint}"))
}

pub fn validate(text: &str, origin: &str, base_dir: &Path) -> Result<Network, ConfigError> {
    let raw: RawNetwork = toml::from_str(text).map_err(|e| toml_error(text, origin, e))?;
    let mut c = Checker {
        text,
        problems: Vec::new(),
    };

    // ---- defaults ----
    let mut defaults = Defaults::default();
    if let Some(d) = &raw.defaults {
        let d = d.get_ref();
        if let Some(f) = &d.fragments {
            match f.get_ref().as_str() {
                "drop" => defaults.fragments = FragmentPolicy::Drop,
                "pass" => defaults.fragments = FragmentPolicy::Pass,
                other => c.at(
                    f,
                    "defaults",
                    "fragments",
                    format!("{other:?} is not a policy; use \"drop\" or \"pass\""),
                ),
            }
        }
        if let Some(v) = &d.new_source_cap {
            match u32::try_from(*v.get_ref()) {
                Ok(n) => defaults.new_source_cap = n,
                Err(_) => c.at(
                    v,
                    "defaults",
                    "new_source_cap",
                    "must be between 0 (no cap) and 4294967295",
                ),
            }
        }
        if let Some(m) = &d.xdp_mode {
            match m.get_ref().as_str() {
                "native" => defaults.xdp_mode = XdpModeSetting::Native,
                "auto" => defaults.xdp_mode = XdpModeSetting::Auto,
                other => c.at(
                    m,
                    "defaults",
                    "xdp_mode",
                    format!("{other:?} is not a mode; use \"native\" or \"auto\""),
                ),
            }
        }
        for (field, v, target) in [
            (
                "flow_table_size",
                &d.flow_table_size,
                &mut defaults.flow_table_size,
            ),
            (
                "bucket_table_size",
                &d.bucket_table_size,
                &mut defaults.bucket_table_size,
            ),
        ] {
            if let Some(v) = v {
                match u32::try_from(*v.get_ref()) {
                    Ok(n) if (1024..=100_000_000).contains(&n) => *target = n,
                    _ => c.at(
                        v,
                        "defaults",
                        field,
                        "must be between 1024 and 100000000 entries",
                    ),
                }
            }
        }
    }

    // ---- nodes ----
    let mut nodes = Vec::new();
    let mut node_lines: HashMap<String, usize> = HashMap::new();
    for n in &raw.nodes {
        let line = c.line(n.span().start);
        let n = n.get_ref();
        let name = n.name.get_ref().clone();
        let item = format!("node {name:?}");
        if let Some(prev) = node_lines.insert(name.clone(), line) {
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
                    format!("{other:?} is not a role; use \"pop\" or \"backend\""),
                );
                continue;
            }
        };
        let xdp_mode = match &n.xdp_mode {
            Some(m) => match m.get_ref().as_str() {
                "native" => Some(XdpModeSetting::Native),
                "auto" => Some(XdpModeSetting::Auto),
                other => {
                    c.at(
                        m,
                        &item,
                        "xdp_mode",
                        format!("{other:?} is not a mode; use \"native\" or \"auto\""),
                    );
                    None
                }
            },
            None => None,
        };
        let parse_v4 = |c: &mut Checker, s: &Spanned<String>, field: &str| -> Option<Ipv4Addr> {
            match s.get_ref().parse::<Ipv4Addr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    c.at(
                        s,
                        &item,
                        field,
                        format!("{:?} is not an IPv4 address", s.get_ref()),
                    );
                    None
                }
            }
        };
        let mut node = Node {
            name: name.clone(),
            role,
            interfaces: Vec::new(),
            tunnel_source: None,
            address: None,
            xdp_mode,
            pops: n
                .pops
                .as_ref()
                .map(|p| p.get_ref().clone())
                .unwrap_or_default(),
            tunnel_mode: false,
            line,
        };
        match role {
            Role::Pop => {
                match &n.interfaces {
                    Some(i) if !i.get_ref().is_empty() => node.interfaces = i.get_ref().clone(),
                    Some(i) => c.at(
                        i,
                        &item,
                        "interfaces",
                        "is empty; list the POP's interfaces, e.g. [\"eth0\"]",
                    ),
                    None => c.push(
                        line,
                        &item,
                        "interfaces",
                        "missing; a POP needs interfaces = [\"eth0\", …]",
                    ),
                }
                if let Some(i) = &n.interface {
                    c.at(
                        i,
                        &item,
                        "interface",
                        "a POP takes `interfaces` (a list), not `interface`",
                    );
                }
                match &n.tunnel_source {
                    Some(t) => node.tunnel_source = parse_v4(&mut c, t, "tunnel_source"),
                    None => c.push(
                        line,
                        &item,
                        "tunnel_source",
                        "missing; a POP needs the IPv4 source of its IPIP packets",
                    ),
                }
                if let Some(a) = &n.address {
                    c.at(
                        a,
                        &item,
                        "address",
                        "only backends take `address`; a POP uses `tunnel_source`",
                    );
                }
                if let Some(m) = &n.mode {
                    c.at(m, &item, "mode", "only backends take `mode`");
                }
            }
            Role::Backend => {
                match (&n.interface, &n.interfaces) {
                    (Some(i), None) => node.interfaces = vec![i.get_ref().clone()],
                    (None, Some(i)) if i.get_ref().len() == 1 => {
                        node.interfaces = i.get_ref().clone()
                    }
                    (None, None) => c.push(
                        line,
                        &item,
                        "interface",
                        "missing; a backend needs interface = \"eth0\"",
                    ),
                    (_, Some(i)) => c.at(
                        i,
                        &item,
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
                            &item,
                            "mode",
                            format!(
                                "{other:?} is not a backend mode; use \"native\" or \"tunnel\""
                            ),
                        ),
                    }
                }
                match &n.address {
                    Some(a) => node.address = parse_v4(&mut c, a, "address"),
                    None => c.push(
                        line,
                        &item,
                        "address",
                        "missing; a backend needs the IPv4 address POPs tunnel to",
                    ),
                }
                if let Some(t) = &n.tunnel_source {
                    c.at(t, &item, "tunnel_source", "only POPs take `tunnel_source`");
                }
            }
        }
        nodes.push((node, n));
    }
    // Backends' `pops` must name POPs.
    let pop_names: BTreeSet<String> = nodes
        .iter()
        .filter(|(n, _)| n.role == Role::Pop)
        .map(|(n, _)| n.name.clone())
        .collect();
    for (node, raw_node) in &nodes {
        if let Some(p) = &raw_node.pops {
            for name in p.get_ref() {
                if !pop_names.contains(name) {
                    c.at(
                        p,
                        &format!("node {:?}", node.name),
                        "pops",
                        format!("{name:?} is not a POP node of this file"),
                    );
                }
            }
        }
    }
    let nodes: Vec<Node> = nodes.into_iter().map(|(n, _)| n).collect();
    if nodes.iter().filter(|n| n.role == Role::Backend).count() > MAX_BACKENDS as usize {
        c.push(
            0,
            "",
            "node",
            format!("more than {MAX_BACKENDS} backends; split the network"),
        );
    }

    // ---- profiles ----
    let mut profiles = Vec::new();
    let mut profile_lines: HashMap<String, usize> = HashMap::new();
    for p in &raw.profiles {
        let line = c.line(p.span().start);
        let p = p.get_ref();
        let name = p.name.get_ref().clone();
        let item = format!("profile {name:?}");
        if let Some(prev) = profile_lines.insert(name.clone(), line) {
            c.at(
                &p.name,
                &item,
                "name",
                format!("duplicate profile name (first defined on line {prev})"),
            );
        }
        if let Some(limit) = check_limit(&mut c, &item, line, &p.pps, &p.bps, &p.burst, &p.block) {
            profiles.push(Profile { name, limit, line });
        }
    }

    // ---- services ----
    let mut services = Vec::new();
    let mut service_lines: HashMap<String, usize> = HashMap::new();
    let mut claimed: HashMap<(IpAddr, &'static str, u16), String> = HashMap::new();
    let node_by_name: HashMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    for s in &raw.services {
        let line = c.line(s.span().start);
        let s = s.get_ref();
        let name = s.name.get_ref().clone();
        let item = format!("service {name:?}");
        if let Some(prev) = service_lines.insert(name.clone(), line) {
            c.at(
                &s.name,
                &item,
                "name",
                format!("duplicate service name (first defined on line {prev})"),
            );
        }
        let vip = match s.vip.get_ref().parse::<IpAddr>() {
            Ok(v) => Some(v),
            Err(_) => {
                c.at(
                    &s.vip,
                    &item,
                    "vip",
                    format!("{:?} is not an IP address", s.vip.get_ref()),
                );
                None
            }
        };
        let protocol = match parse_protocol(s.protocol.get_ref()) {
            Some(p) => Some(p),
            None => {
                c.at(
                    &s.protocol,
                    &item,
                    "protocol",
                    format!(
                        "{:?} is not a protocol; use \"udp\", \"tcp\" or \"icmp\"",
                        s.protocol.get_ref()
                    ),
                );
                None
            }
        };
        let mut ports = Vec::new();
        match (protocol, &s.ports) {
            (Some(Protocol::Icmp), Some(p)) => c.at(
                p,
                &item,
                "ports",
                "an icmp service takes no ports; remove `ports`",
            ),
            (Some(Protocol::Udp | Protocol::Tcp), None) => c.push(
                line,
                &item,
                "ports",
                "missing; a udp/tcp service needs ports = \"N\" or \"LOW-HIGH\"",
            ),
            (_, Some(p)) => match parse_ports(p.get_ref()) {
                Ok(v) => ports = v,
                Err(e) => c.at(p, &item, "ports", e),
            },
            _ => {}
        }
        let mut backends = Vec::new();
        let weights: BTreeMap<String, i64> = s
            .weights
            .as_ref()
            .map(|w| w.get_ref().clone())
            .unwrap_or_default();
        if let Some(b) = &s.backends {
            let mut seen = BTreeSet::new();
            for bn in b.get_ref() {
                if !seen.insert(bn.clone()) {
                    c.at(b, &item, "backends", format!("{bn:?} is listed twice"));
                    continue;
                }
                match node_by_name.get(bn.as_str()) {
                    None => c.at(b, &item, "backends", format!("{bn:?} is not a node of this file; add a [[node]] with role = \"backend\"")),
                    Some(n) if n.role != Role::Backend => {
                        c.at(b, &item, "backends", format!("{bn:?} is a POP, not a backend"))
                    }
                    Some(_) => {
                        let w = weights.get(bn).copied().unwrap_or(1);
                        if !(0..=1000).contains(&w) {
                            c.at(s.weights.as_ref().unwrap(), &item, "weights", format!("weight of {bn:?} must be 0 (drain) to 1000"));
                        }
                        backends.push((bn.clone(), w.clamp(0, 1000) as u32));
                    }
                }
            }
        }
        if let Some(w) = &s.weights {
            for k in w.get_ref().keys() {
                if !backends.iter().any(|(b, _)| b == k)
                    && !s.backends.as_ref().is_some_and(|b| b.get_ref().contains(k))
                {
                    c.at(
                        w,
                        &item,
                        "weights",
                        format!("{k:?} is not in this service's backends"),
                    );
                }
            }
        }
        let limit = s.limit.as_ref().and_then(|l| {
            let ll = c.line(l.span().start);
            let l = l.get_ref();
            check_limit(&mut c, &item, ll, &l.pps, &l.bps, &l.burst, &l.block)
        });
        // An IPv4 service is forwarded to backends: without any, every player would be dropped.
        if matches!(vip, Some(IpAddr::V4(_)))
            && s.backends.as_ref().is_none_or(|b| b.get_ref().is_empty())
        {
            c.push(
                line,
                &item,
                "backends",
                "no backend serves this VIP; list at least one role = \"backend\" node in backends = [...]",
            );
        }
        if let (Some(vip), Some(protocol)) = (vip, protocol) {
            if let Some(n) = nodes.iter().find(|n| {
                n.address.map(IpAddr::V4) == Some(vip)
                    || n.tunnel_source.map(IpAddr::V4) == Some(vip)
            }) {
                c.at(&s.vip, &item, "vip", format!("{vip} is also the address of node {:?}; a VIP must be an address of its own", n.name));
            }
            let pr = protocol.name();
            let port_list: Vec<u16> = if protocol == Protocol::Icmp {
                vec![0]
            } else {
                ports.iter().flat_map(|&(a, b)| a..=b).collect()
            };
            for port in port_list {
                if let Some(other) = claimed.insert((vip, pr, port), name.clone())
                    && other != name
                {
                    {
                        c.at(&s.vip, &item, "ports", format!("{vip} {pr} port {port} is already served by service {other:?}; each VIP/protocol/port belongs to one service"));
                        break;
                    }
                }
            }
            services.push(Service {
                name,
                vip,
                protocol,
                ports,
                backends,
                limit,
                line,
            });
        }
    }
    if services.len() > MAX_SERVICES as usize {
        c.push(
            0,
            "",
            "service",
            format!(
                "{} services; at most {MAX_SERVICES} are supported",
                services.len()
            ),
        );
    }

    // ---- rules ----
    let mut rules = Vec::new();
    let mut rule_lines: HashMap<String, usize> = HashMap::new();
    let mut prefix_sets: BTreeSet<(Vec<Ipv4Net>, Vec<Ipv6Net>)> = BTreeSet::new();
    let mut prefix_files: HashMap<std::path::PathBuf, Result<Vec<IpNet>, String>> = HashMap::new();
    // Sorted, de-duplicated source lists by (src, src_file): a blocklist shared by many rules is
    // sorted once, not once per rule (63 rules × 100,000 prefixes was half of a large apply).
    type SortedSources = (Vec<Ipv4Net>, Vec<Ipv6Net>);
    let mut sorted_sources: HashMap<(Vec<String>, Option<String>), SortedSources> = HashMap::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let line = c.line(r.span().start);
        let r = r.get_ref();
        let name = r
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .unwrap_or_else(|| format!("rule-{}", i + 1));
        let item = format!("rule {name:?}");
        if let Some(prev) = rule_lines.insert(name.clone(), line) {
            let l = r
                .name
                .as_ref()
                .map(|n| c.line(n.span().start))
                .unwrap_or(line);
            c.push(
                l,
                &item,
                "name",
                format!("duplicate rule name (first defined on line {prev})"),
            );
        }
        let action = match r.action.get_ref().as_str() {
            "deny" => Some(Action::Deny),
            "allow" => Some(Action::Allow),
            "limit" => match &r.profile {
                Some(p) => {
                    if profiles.iter().any(|x| &x.name == p.get_ref())
                        || profile_lines.contains_key(p.get_ref())
                    {
                        Some(Action::Limit(p.get_ref().clone()))
                    } else {
                        c.at(
                            p,
                            &item,
                            "profile",
                            format!("{:?} is not a [[profile]] of this file", p.get_ref()),
                        );
                        None
                    }
                }
                None => {
                    c.at(
                        &r.action,
                        &item,
                        "profile",
                        "action \"limit\" needs profile = \"NAME\" of a [[profile]]",
                    );
                    None
                }
            },
            other => {
                c.at(
                    &r.action,
                    &item,
                    "action",
                    format!("{other:?} is not an action; use \"deny\", \"allow\" or \"limit\""),
                );
                None
            }
        };
        if let (Some(p), Some(a)) = (&r.profile, &action)
            && *a != Action::Limit(p.get_ref().clone())
        {
            {
                c.at(
                    p,
                    &item,
                    "profile",
                    "only rules with action = \"limit\" take a profile",
                );
            }
        }
        let mut svc = Vec::new();
        if let Some(s) = &r.services {
            for n in s.get_ref() {
                if !service_lines.contains_key(n) {
                    c.at(
                        s,
                        &item,
                        "services",
                        format!("{n:?} is not a [[service]] of this file"),
                    );
                }
                svc.push(n.clone());
            }
        }
        let cache_key = (
            r.src
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_default(),
            r.src_file.as_ref().map(|f| f.get_ref().clone()),
        );
        let cached = sorted_sources.get(&cache_key).cloned();
        let mut src: Vec<IpNet> = Vec::new();
        if let Some(s) = r.src.as_ref().filter(|_| cached.is_none()) {
            for p in s.get_ref() {
                match parse_prefix(p) {
                    Ok(n) => src.push(n),
                    Err(e) => c.at(s, &item, "src", e),
                }
            }
        }
        if let Some(f) = r.src_file.as_ref().filter(|_| cached.is_none()) {
            let path = base_dir.join(f.get_ref());
            // A shared blocklist named by many rules is read once.
            let read = prefix_files
                .entry(path.clone())
                .or_insert_with(|| read_prefix_file(&path));
            match read {
                Ok(v) => src.extend(v.iter().copied()),
                Err(e) => c.at(f, &item, "src_file", e.clone()),
            }
        }
        let mut src_v4: Vec<Ipv4Net> = src
            .iter()
            .filter_map(|n| if let IpNet::V4(v) = n { Some(*v) } else { None })
            .collect();
        let mut src_v6: Vec<Ipv6Net> = src
            .iter()
            .filter_map(|n| if let IpNet::V6(v) = n { Some(*v) } else { None })
            .collect();
        if let Some((v4, v6)) = cached {
            (src_v4, src_v6) = (v4, v6);
        } else {
            src_v4.sort();
            src_v4.dedup();
            src_v6.sort();
            src_v6.dedup();
            let problems_here = c.problems.iter().any(|p| p.item == item);
            if !problems_here {
                sorted_sources.insert(cache_key, (src_v4.clone(), src_v6.clone()));
            }
        }
        if (r.src.is_some() || r.src_file.is_some())
            && src_v4.is_empty()
            && src_v6.is_empty()
            && !c.problems.iter().any(|p| p.item == item)
        {
            c.push(
                line,
                &item,
                "src",
                "no prefixes given; remove src/src_file to match every source",
            );
        }
        if !src_v4.is_empty() || !src_v6.is_empty() {
            prefix_sets.insert((src_v4.clone(), src_v6.clone()));
        }
        let mut protocols = Vec::new();
        if let Some(p) = &r.protocol {
            let items: Vec<&toml::Value> = match p.get_ref() {
                toml::Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for v in items {
                match v.as_str().and_then(parse_protocol) {
                    Some(pr) => protocols.push(pr),
                    None => c.at(p, &item, "protocol", format!("{v} is not a protocol; use \"udp\", \"tcp\", \"icmp\" or a list of them")),
                }
            }
        }
        let mut range = |field: &str,
                         v: &Option<Spanned<toml::Value>>,
                         min: u64,
                         max: u64|
         -> Option<(u64, u64)> {
            let v = v.as_ref()?;
            if v.get_ref().is_array() {
                c.at(
                    v,
                    &item,
                    field,
                    "a rule takes one range here; split the rule in two for two ranges",
                );
                return None;
            }
            match parse_range(v.get_ref(), min, max) {
                Ok(r) => Some(r),
                Err(e) => {
                    c.at(v, &item, field, e);
                    None
                }
            }
        };
        let src_ports =
            range("src_ports", &r.src_ports, 0, 65535).map(|(a, b)| (a as u16, b as u16));
        let dst_ports =
            range("dst_ports", &r.dst_ports, 0, 65535).map(|(a, b)| (a as u16, b as u16));
        let length = range("length", &r.length, 0, 65535).map(|(a, b)| (a as u16, b as u16));
        let ttl = range("ttl", &r.ttl, 0, 255).map(|(a, b)| (a as u8, b as u8));
        let icmp_type = range("icmp_type", &r.icmp_type, 0, 255).map(|(a, b)| (a as u8, b as u8));
        let tcp_flags = match &r.tcp_flags {
            Some(f) => match parse_tcp_flags(f.get_ref()) {
                Ok(v) => Some(v),
                Err(e) => {
                    c.at(f, &item, "tcp_flags", e);
                    None
                }
            },
            None => None,
        };
        if let Some(action) = action {
            rules.push(Rule {
                name,
                action,
                services: svc,
                src_v4,
                src_v6,
                protocols,
                src_ports,
                dst_ports,
                tcp_flags,
                length,
                ttl,
                icmp_type,
                line,
            });
        }
    }
    if raw.rules.len() > MAX_RULES_TOTAL as usize {
        c.push(
            0,
            "",
            "rule",
            format!(
                "{} rules; at most {MAX_RULES_TOTAL} in one file",
                raw.rules.len()
            ),
        );
    }
    if prefix_sets.len() > MAX_PREFIX_SETS as usize {
        c.push(
            0,
            "",
            "rule",
            format!(
                "{} distinct source prefix lists; at most {MAX_PREFIX_SETS}. Rules with the same src list share one set: merge lists or use src_file for shared blocklists",
                prefix_sets.len()
            ),
        );
    }
    for s in &services {
        let n = rules.iter().filter(|r| r.applies_to(&s.name)).count();
        if n > RULES_PER_SERVICE as usize {
            c.push(
                s.line,
                &format!("service {:?}", s.name),
                "rules",
                format!("{n} rules apply to it; at most {RULES_PER_SERVICE}. Scope rules to fewer services with `services = [...]` or merge them"),
            );
        }
    }

    if !c.problems.is_empty() {
        return Err(ConfigError {
            origin: origin.to_owned(),
            problems: c.problems,
        });
    }
    Ok(Network {
        defaults,
        services,
        profiles,
        rules,
        nodes,
        source_text_hash: fnv1a(text.as_bytes()),
        origin: origin.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[[node]]
name = "pop-1"
role = "pop"
interfaces = ["eth0"]
tunnel_source = "198.51.100.1"

[[node]]
name = "be-1"
role = "backend"
interface = "eth0"
address = "192.0.2.21"
"#;

    fn err(extra: &str) -> String {
        let text = format!("{BASE}{extra}");
        validate(&text, "net.toml", Path::new("."))
            .unwrap_err()
            .to_string()
    }

    /// Line (1-based) of the first line containing `needle` in BASE + extra.
    fn line_of(extra: &str, needle: &str) -> usize {
        let text = format!("{BASE}{extra}");
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn the_example_is_valid() {
        let net = validate(include_str!("example.toml"), "example.toml", Path::new(".")).unwrap();
        assert_eq!(net.services.len(), 2);
        assert_eq!(net.rules.len(), 4);
        assert_eq!(
            net.services[0].backends,
            vec![("be-fra-1".to_string(), 1), ("be-fra-2".to_string(), 0)]
        );
        assert_eq!(net.services[0].limit.as_ref().unwrap().bps, Some(4_000_000));
        assert_eq!(net.rules[1].tcp_flags, Some((0x12, 0x02)));
        assert!(net.node("pop-ams-1").unwrap().xdp_mode_auto(&net.defaults));
        assert!(!net.node("pop-nyc-1").unwrap().xdp_mode_auto(&net.defaults));
    }

    #[test]
    fn empty_port_range_names_line_field_and_fix() {
        let extra = "\n[[service]]\nname = \"g\"\nvip = \"203.0.113.10\"\nprotocol = \"udp\"\nports = \"28015-28010\"\n";
        let e = err(extra);
        let l = line_of(extra, "28015-28010");
        assert!(
            e.contains(&format!("net.toml:{l}: service \"g\": ports:")),
            "{e}"
        );
        assert!(e.contains("empty range") && e.contains("LOW-HIGH"), "{e}");
    }

    #[test]
    fn syntax_errors_and_unknown_keys_have_lines() {
        let e = err("\n[[service]]\nname = \"g\"\nvip = \"203.0.113.10\"\nprotocl = \"udp\"\n");
        assert!(e.contains("unknown field") && e.contains("protocl"), "{e}");
        assert!(e.starts_with("net.toml:"), "{e}");
        let e = err("\n[[service]\n");
        assert!(
            e.starts_with(&format!("net.toml:{}", BASE.lines().count() + 2)),
            "{e}"
        );
    }

    #[test]
    fn all_problems_are_reported_not_just_the_first() {
        let extra = "\n[[service]]\nname = \"g\"\nvip = \"not-an-ip\"\nprotocol = \"udp\"\nports = \"70000\"\nbackends = [\"ghost\", \"pop-1\"]\n";
        let e = err(extra);
        assert_eq!(e.lines().count(), 4, "{e}");
        assert!(e.contains("vip: \"not-an-ip\" is not an IP address"), "{e}");
        assert!(e.contains("outside 1-65535"), "{e}");
        assert!(e.contains("\"ghost\" is not a node"), "{e}");
        assert!(e.contains("\"pop-1\" is a POP, not a backend"), "{e}");
    }

    #[test]
    fn duplicates_and_unknown_references() {
        let extra = r#"
[[service]]
name = "g"
vip = "203.0.113.10"
protocol = "udp"
ports = "1-10"

[[service]]
name = "h"
vip = "203.0.113.10"
protocol = "udp"
ports = "5"

[[rule]]
name = "r"
action = "limit"
profile = "nope"
services = ["zzz"]

[[rule]]
name = "r"
action = "deny"
profile = "x"
"#;
        let e = err(extra);
        assert!(
            e.contains("port 5 is already served by service \"g\""),
            "{e}"
        );
        assert!(e.contains("\"nope\" is not a [[profile]]"), "{e}");
        assert!(e.contains("\"zzz\" is not a [[service]]"), "{e}");
        assert!(e.contains("duplicate rule name"), "{e}");
        assert!(
            e.contains("only rules with action = \"limit\" take a profile"),
            "{e}"
        );
    }

    #[test]
    fn nodes_need_their_role_fields() {
        let e = err(
            "\n[[node]]\nname = \"pop-2\"\nrole = \"pop\"\n\n[[node]]\nname = \"be-2\"\nrole = \"backend\"\n",
        );
        assert!(e.contains("node \"pop-2\": interfaces: missing"), "{e}");
        assert!(e.contains("node \"pop-2\": tunnel_source: missing"), "{e}");
        assert!(e.contains("node \"be-2\": address: missing"), "{e}");
        assert!(e.contains("node \"be-2\": interface: missing"), "{e}");
    }

    #[test]
    fn limits_are_checked() {
        let e = err(
            "\n[[profile]]\nname = \"p\"\nburst = 1.0\n\n[[profile]]\nname = \"q\"\npps = 10\nburst = 0.01\nblock = \"5 fortnights\"\n",
        );
        assert!(
            e.contains("profile \"p\": limit: has neither pps nor bps"),
            "{e}"
        );
        assert!(e.contains("below one packet"), "{e}");
        assert!(e.contains("block"), "{e}");
    }

    #[test]
    fn an_ipv4_service_needs_a_backend() {
        let e = err(
            "\n[[service]]\nname = \"g\"\nvip = \"203.0.113.10\"\nprotocol = \"udp\"\nports = \"1\"\n",
        );
        assert!(
            e.contains("service \"g\": backends: no backend serves this VIP"),
            "{e}"
        );
    }

    #[test]
    fn icmp_and_port_rules() {
        let e = err(
            "\n[[service]]\nname = \"i\"\nvip = \"203.0.113.10\"\nprotocol = \"icmp\"\nports = \"1\"\n\n[[service]]\nname = \"u\"\nvip = \"203.0.113.10\"\nprotocol = \"udp\"\n",
        );
        assert!(e.contains("an icmp service takes no ports"), "{e}");
        assert!(e.contains("service \"u\": ports: missing"), "{e}");
    }

    #[test]
    fn vip_may_not_be_a_node_address() {
        let e = err(
            "\n[[service]]\nname = \"g\"\nvip = \"192.0.2.21\"\nprotocol = \"udp\"\nports = \"1\"\n",
        );
        assert!(e.contains("also the address of node \"be-1\""), "{e}");
    }

    #[test]
    fn too_many_rules_for_one_service() {
        let mut extra = String::from(
            "\n[[service]]\nname = \"g\"\nvip = \"203.0.113.10\"\nprotocol = \"udp\"\nports = \"1\"\n",
        );
        for i in 0..65 {
            extra.push_str(&format!("\n[[rule]]\naction = \"deny\"\nttl = \"{i}\"\n"));
        }
        let e = err(&extra);
        assert!(e.contains("65 rules apply to it; at most 64"), "{e}");
    }

    #[test]
    fn too_many_prefix_sets() {
        let mut extra = String::new();
        for i in 0..65 {
            extra.push_str(&format!(
                "\n[[rule]]\naction = \"deny\"\nsrc = [\"10.{i}.0.0/16\"]\nservices = []\n"
            ));
        }
        let e = err(&extra);
        assert!(
            e.contains("65 distinct source prefix lists; at most 64"),
            "{e}"
        );
    }

    #[test]
    fn src_file_is_read_relative_and_bad_lines_are_located() {
        let dir = std::env::temp_dir().join(format!("anypop-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("good.txt"),
            "# blocklist\n198.18.0.0/15\n\n203.0.113.7\n2001:db8:bad::/48 # v6\n",
        )
        .unwrap();
        std::fs::write(dir.join("bad.txt"), "10.0.0.0/8\n10.0.0.0/33\n").unwrap();
        let text = format!("{BASE}\n[[rule]]\naction = \"deny\"\nsrc_file = \"good.txt\"\n");
        let net = validate(&text, "net.toml", &dir).unwrap();
        assert_eq!(net.rules[0].src_v4.len(), 2);
        assert_eq!(net.rules[0].src_v6.len(), 1);
        let text = format!(
            "{BASE}\n[[rule]]\naction = \"deny\"\nsrc_file = \"bad.txt\"\n\n[[rule]]\naction = \"deny\"\nsrc_file = \"missing.txt\"\n"
        );
        let e = validate(&text, "net.toml", &dir).unwrap_err().to_string();
        assert!(e.contains("bad.txt:2:"), "{e}");
        assert!(
            e.contains("cannot read") && e.contains("missing.txt"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn value_parsers() {
        assert_eq!(
            parse_bps(&toml::Value::String("4Mbit".into())),
            Ok(4_000_000)
        );
        assert_eq!(
            parse_bps(&toml::Value::String("1.5Gbit".into())),
            Ok(1_500_000_000)
        );
        assert_eq!(parse_bps(&toml::Value::Integer(64000)), Ok(64000));
        assert!(parse_bps(&toml::Value::String("4 parsecs".into())).is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_tcp_flags("SYN,!ACK"), Ok((0x12, 0x02)));
        assert!(parse_tcp_flags("SYN,NOPE").is_err());
        assert_eq!(
            parse_range(&toml::Value::String("1024-65535".into()), 1, 65535),
            Ok((1024, 65535))
        );
    }
}
