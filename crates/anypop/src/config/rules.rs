//! `[[rule]]` tables: action, scope, sources (inline and `src_file`) and packet conditions, and
//! the limits of the kernel tables they fill.
use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use toml::Spanned;

use super::{
    Action, Profile, Protocol, Rule, Service,
    names::{NAME_RULE, check_name, excerpt, path_excerpt},
    raw::RawRule,
    read::{PREFIX_FILE_LIMIT, read_bounded_text},
    services::Checked,
    validate::Checker,
    values::{host_bits_message, parse_prefix, parse_protocol, parse_range, parse_tcp_flags},
};
use anypop_common::layout::{MAX_PREFIX_SETS, MAX_RULES_TOTAL, MAX_SERVICES, RULES_PER_SERVICE};

/// Sorted, de-duplicated source prefixes.
type SortedSources = (Vec<Ipv4Net>, Vec<Ipv6Net>);

/// A `src_file` as read: its prefixes, and the first of those written with host bits (with its
/// line) and how many were, for one warning per file.
struct PrefixFile {
    nets: Vec<IpNet>,
    host_bits: Option<(usize, IpNet)>,
    host_bits_count: usize,
}

/// What the rules share while they are checked.
struct RuleCtx<'a> {
    base_dir: &'a Path,
    services: &'a Checked<Service>,
    /// Each valid service's protocol, by name.
    service_protocols: HashMap<&'a str, Protocol>,
    profiles: &'a Checked<Profile>,
    rule_lines: HashMap<String, usize>,
    prefix_sets: BTreeSet<SortedSources>,
    /// A shared blocklist named by many rules is read once.
    prefix_files: HashMap<PathBuf, Result<PrefixFile, String>>,
    /// Source lists by (src, src_file): a blocklist shared by many rules is sorted once, not once
    /// per rule (63 rules × 100,000 prefixes was half of a large apply).
    sorted_sources: HashMap<(Vec<String>, Option<String>), SortedSources>,
}

pub(super) fn check_rules(
    c: &mut Checker,
    raw: &[Spanned<RawRule>],
    base_dir: &Path,
    services: &Checked<Service>,
    profiles: &Checked<Profile>,
) -> Vec<Rule> {
    let mut ctx = RuleCtx {
        base_dir,
        services,
        service_protocols: services
            .items
            .iter()
            .map(|s| (s.name.as_str(), s.protocol))
            .collect(),
        profiles,
        rule_lines: HashMap::new(),
        prefix_sets: BTreeSet::new(),
        prefix_files: HashMap::new(),
        sorted_sources: HashMap::new(),
    };
    let rules: Vec<Rule> = raw
        .iter()
        .enumerate()
        .filter_map(|(i, r)| check_rule(c, &mut ctx, i, r))
        .collect();
    if raw.len() > MAX_RULES_TOTAL as usize {
        c.push(
            0,
            "",
            "rule",
            format!("{} rules; at most {MAX_RULES_TOTAL} in one file", raw.len()),
        );
    }
    if ctx.prefix_sets.len() > MAX_PREFIX_SETS as usize {
        c.push(
            0,
            "",
            "rule",
            format!(
                "{} distinct source prefix lists; at most {MAX_PREFIX_SETS}. Rules with the same src list share one set: merge lists or use src_file for shared blocklists",
                ctx.prefix_sets.len()
            ),
        );
    }
    // Rules per service; with more services or rules than the kernel takes (refused above or in
    // the services) this would be services × rules for nothing.
    let within_limits =
        services.items.len() <= MAX_SERVICES as usize && rules.len() <= MAX_RULES_TOTAL as usize;
    for s in services.items.iter().filter(|_| within_limits) {
        let n = rules.iter().filter(|r| r.applies_to(&s.name)).count();
        if n > RULES_PER_SERVICE as usize {
            c.push(
                s.line,
                &format!("service {}", excerpt(&s.name)),
                "rules",
                format!("{n} rules apply to it; at most {RULES_PER_SERVICE}. Scope rules to fewer services with `services = [...]` or merge them"),
            );
        }
    }
    rules
}

fn check_rule(c: &mut Checker, ctx: &mut RuleCtx, i: usize, r: &Spanned<RawRule>) -> Option<Rule> {
    let line = c.line(r.span().start);
    let first_problem = c.problems.len();
    let r = r.get_ref();
    let name = r
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| format!("rule-{}", i + 1));
    let item = format!("rule {}", excerpt(&name));
    if let Some(n) = &r.name
        && let Err(why) = check_name(n.get_ref())
    {
        c.at(n, &item, "name", format!("{why}; {NAME_RULE}"));
    }
    if let Some(prev) = ctx.rule_lines.insert(name.clone(), line) {
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
    let action = check_action(c, ctx, r, &item);
    let services = check_scope(c, ctx, r, &item);
    let (src_v4, src_v6) = check_sources(c, ctx, r, (line, first_problem), &item);
    let mut protocols = Vec::new();
    if let Some(p) = &r.protocol {
        let items: Vec<&toml::Value> = match p.get_ref() {
            toml::Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for v in items {
            match v.as_str().and_then(parse_protocol) {
                Some(pr) => protocols.push(pr),
                None => c.at(
                    p,
                    &item,
                    "protocol",
                    format!(
                        "{} is not a protocol; use \"udp\", \"tcp\", \"icmp\" or a list of them",
                        value_excerpt(v)
                    ),
                ),
            }
        }
    }
    let mut range = |field: &str, v: &Option<Spanned<toml::Value>>, max: u64| {
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
        parse_range(v.get_ref(), 0, max)
            .map_err(|e| c.at(v, &item, field, e))
            .ok()
    };
    let src_ports = range("src_ports", &r.src_ports, 65535).map(|(a, b)| (a as u16, b as u16));
    let dst_ports = range("dst_ports", &r.dst_ports, 65535).map(|(a, b)| (a as u16, b as u16));
    let length = range("length", &r.length, 65535).map(|(a, b)| (a as u16, b as u16));
    let ttl = range("ttl", &r.ttl, 255).map(|(a, b)| (a as u8, b as u8));
    let icmp_type = range("icmp_type", &r.icmp_type, 255).map(|(a, b)| (a as u8, b as u8));
    let tcp_flags = r.tcp_flags.as_ref().and_then(|f| {
        parse_tcp_flags(f.get_ref())
            .map_err(|e| c.at(f, &item, "tcp_flags", e))
            .ok()
    });
    check_protocol_fields(c, ctx, r, &item, &protocols, services.as_deref());
    Some(Rule {
        name,
        action: action?,
        services: services.unwrap_or_default(),
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
    })
}

/// `action`, and `profile` for "limit" (only for it).
fn check_action(c: &mut Checker, ctx: &RuleCtx, r: &RawRule, item: &str) -> Option<Action> {
    let action = match r.action.get_ref().as_str() {
        "deny" => Some(Action::Deny),
        "allow" => Some(Action::Allow),
        "limit" => match &r.profile {
            Some(p) if ctx.profiles.lines.contains_key(p.get_ref()) => {
                Some(Action::Limit(p.get_ref().clone()))
            }
            Some(p) => {
                c.at(
                    p,
                    item,
                    "profile",
                    format!("{} is not a [[profile]] of this file", excerpt(p.get_ref())),
                );
                None
            }
            None => {
                c.at(
                    &r.action,
                    item,
                    "profile",
                    "action \"limit\" needs profile = \"NAME\" of a [[profile]]",
                );
                None
            }
        },
        other => {
            c.at(
                &r.action,
                item,
                "action",
                format!(
                    "{} is not an action; use \"deny\", \"allow\" or \"limit\"",
                    excerpt(other)
                ),
            );
            None
        }
    };
    if let (Some(p), Some(a)) = (&r.profile, &action)
        && *a != Action::Limit(p.get_ref().clone())
    {
        c.at(
            p,
            item,
            "profile",
            "only rules with action = \"limit\" take a profile",
        );
    }
    action
}

/// `services`: names of this file's services; absent = every service. An empty list would
/// mean "no service" to a reader and "every service" to the old code, so it is refused.
fn check_scope(c: &mut Checker, ctx: &RuleCtx, r: &RawRule, item: &str) -> Option<Vec<String>> {
    let s = r.services.as_ref()?;
    if s.get_ref().is_empty() {
        c.at(
            s,
            item,
            "services",
            "is empty, so the rule would apply to no service; name services, or remove `services` to apply it to every service",
        );
    }
    for n in s.get_ref() {
        if !ctx.services.lines.contains_key(n) {
            c.at(
                s,
                item,
                "services",
                format!("{} is not a [[service]] of this file", excerpt(n)),
            );
        }
    }
    Some(s.get_ref().clone())
}

/// Conditions on fields no packet of the rule's protocols has: `tcp_flags` without tcp,
/// `icmp_type` without icmp, ports with icmp only. They can never match, so they are refused.
///
/// A rule scoped to services sees only their protocols (a UDP service never receives a TCP
/// packet), so the same is checked against its `protocol` narrowed to its services' protocols;
/// that is only a warning, since a rule may be written ahead of the service it is meant for.
fn check_protocol_fields(
    c: &mut Checker,
    ctx: &RuleCtx,
    r: &RawRule,
    item: &str,
    protocols: &[Protocol],
    scope: Option<&[String]>,
) {
    const ALL: [Protocol; 3] = [Protocol::Udp, Protocol::Tcp, Protocol::Icmp];
    let own: Vec<Protocol> = if protocols.is_empty() {
        ALL.to_vec()
    } else {
        protocols.to_vec()
    };
    let refused = impossible_conditions(r, &own, "");
    for (field, offset, msg) in &refused {
        let line = c.line(*offset);
        c.push(line, item, field, msg.clone());
    }
    let mut carried: Vec<Protocol> = Vec::new();
    for p in scope
        .unwrap_or_default()
        .iter()
        .filter_map(|s| ctx.service_protocols.get(s.as_str()))
    {
        if !carried.contains(p) {
            carried.push(*p);
        }
    }
    if carried.is_empty() {
        return;
    }
    let seen: Vec<Protocol> = own.into_iter().filter(|p| carried.contains(p)).collect();
    if seen.is_empty() {
        if let Some(p) = &r.protocol {
            c.warn(
                c.line(p.span().start),
                item,
                "protocol",
                format!(
                    "none of its services carries {}, so the rule never matches; change `protocol` or `services`",
                    names_of(protocols)
                ),
            );
        }
        return;
    }
    for (field, offset, msg) in impossible_conditions(r, &seen, " (its services carry no other)") {
        if !refused.iter().any(|(f, _, _)| *f == field) {
            c.warn(c.line(offset), item, field, msg);
        }
    }
}

/// The conditions of `r` that no packet of `seen` has: (field, its offset, message).
fn impossible_conditions(
    r: &RawRule,
    seen: &[Protocol],
    why: &str,
) -> Vec<(&'static str, usize, String)> {
    let only = format!("this rule can only match {} packets{why}", names_of(seen));
    let mut out = Vec::new();
    if let Some(f) = &r.tcp_flags
        && !seen.contains(&Protocol::Tcp)
    {
        out.push((
            "tcp_flags",
            f.span().start,
            format!("TCP flags are only in TCP packets, and {only}; remove tcp_flags or make the rule match tcp"),
        ));
    }
    if let Some(f) = &r.icmp_type
        && !seen.contains(&Protocol::Icmp)
    {
        out.push((
            "icmp_type",
            f.span().start,
            format!("ICMP types are only in ICMP packets, and {only}; remove icmp_type or make the rule match icmp"),
        ));
    }
    if seen == [Protocol::Icmp] {
        for (field, v) in [("src_ports", &r.src_ports), ("dst_ports", &r.dst_ports)] {
            if let Some(v) = v {
                out.push((
                    field,
                    v.span().start,
                    format!("ICMP packets have no ports, and {only}; remove {field} or make the rule match udp or tcp"),
                ));
            }
        }
    }
    out
}

fn names_of(protocols: &[Protocol]) -> String {
    let names: Vec<&str> = protocols.iter().map(|p| p.name()).collect();
    names.join("/")
}

/// A TOML value quoted in a message: strings as an excerpt, anything else by its type.
fn value_excerpt(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => excerpt(s),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
        other => other.to_string(),
    }
}

/// `src` and `src_file`: the rule's source prefixes, sorted and de-duplicated.
fn check_sources(
    c: &mut Checker,
    ctx: &mut RuleCtx,
    r: &RawRule,
    (line, first_problem): (usize, usize),
    item: &str,
) -> SortedSources {
    if r.src.is_none() && r.src_file.is_none() {
        return Default::default();
    }
    let key = (
        r.src
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_default(),
        r.src_file.as_ref().map(|f| f.get_ref().clone()),
    );
    if let Some(sorted) = ctx.sorted_sources.get(&key) {
        return sorted.clone();
    }
    let mut src: Vec<IpNet> = Vec::new();
    if let Some(s) = &r.src {
        let mut host_bits = Vec::new();
        for p in s.get_ref() {
            match parse_prefix(p) {
                Some(n) => {
                    src.push(n.net);
                    if n.host_bits {
                        host_bits.push(p.trim().parse::<IpNet>().unwrap_or(n.net));
                    }
                }
                None => c.at(
                    s,
                    item,
                    "src",
                    format!(
                        "{} is not a prefix; write e.g. \"198.18.0.0/15\", \"2001:db8::/32\" or an address",
                        excerpt(p)
                    ),
                ),
            }
        }
        if let Some(first) = host_bits.first() {
            let more = match host_bits.len() {
                1 => String::new(),
                n => format!(" ({} more like it)", n - 1),
            };
            c.warn(
                c.line(s.span().start),
                item,
                "src",
                format!("{}{more}", host_bits_message(first)),
            );
        }
    }
    if let Some(f) = &r.src_file {
        let path = ctx.base_dir.join(f.get_ref());
        let fresh = !ctx.prefix_files.contains_key(&path);
        let read = ctx
            .prefix_files
            .entry(path.clone())
            .or_insert_with(|| read_prefix_file(&path));
        match read {
            Ok(file) => {
                src.extend(file.nets.iter().copied());
                if let (true, Some((l, written))) = (fresh, file.host_bits) {
                    let msg = format!(
                        "{}:{l}: {}{}",
                        path_excerpt(&path),
                        host_bits_message(&written),
                        match file.host_bits_count {
                            1 => String::new(),
                            n => format!(" ({} more lines like it)", n - 1),
                        }
                    );
                    c.warn(c.line(f.span().start), item, "src_file", msg);
                }
            }
            Err(e) => c.at(f, item, "src_file", e.clone()),
        }
    }
    let (mut v4, mut v6): (Vec<Ipv4Net>, Vec<Ipv6Net>) = (Vec::new(), Vec::new());
    for n in src {
        match n {
            IpNet::V4(n) => v4.push(n),
            IpNet::V6(n) => v6.push(n),
        }
    }
    v4.sort();
    v4.dedup();
    v6.sort();
    v6.dedup();
    // Only a rule without problems so far (its own: they are the last ones pushed).
    if c.problems.len() == first_problem {
        if v4.is_empty() && v6.is_empty() {
            c.push(
                line,
                item,
                "src",
                "no prefixes given; remove src/src_file to match every source",
            );
        } else {
            ctx.sorted_sources.insert(key, (v4.clone(), v6.clone()));
        }
    }
    if !v4.is_empty() || !v6.is_empty() {
        ctx.prefix_sets.insert((v4.clone(), v6.clone()));
    }
    (v4, v6)
}

/// Reads a prefix file: one prefix per line, `#` comments, blank lines allowed; a regular file of
/// at most [`PREFIX_FILE_LIMIT`].
///
/// The path comes from the network file, which may have been written by someone else, and
/// `check` and the daemon often run as root: `src_file = "/etc/shadow"` must not print the
/// file. So reading stops at the first line that is not a prefix, and that line is quoted only
/// if it looks like an attempt at one — at most 50 characters, only hex digits, '.', ':' and
/// '/', with a '.' or a ':' (`10.0.0.0/33`, `2001:db8::/129`). Anything else (a password hash,
/// a user name, a hex key without separators) is located by its line number only.
fn read_prefix_file(path: &Path) -> Result<PrefixFile, String> {
    let text = read_bounded_text(path, PREFIX_FILE_LIMIT, "src_file").map_err(|e| e.to_string())?;
    let mut file = PrefixFile {
        nets: Vec::new(),
        host_bits: None,
        host_bits_count: 0,
    };
    for (i, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let Some(p) = parse_prefix(l) else {
            let at = format!("{}:{}", path_excerpt(path), i + 1);
            return Err(if looks_like_a_prefix(l) {
                format!(
                    "{at}: {} is not a prefix; write one prefix or address per line, e.g. 198.18.0.0/15",
                    excerpt(l)
                )
            } else {
                format!(
                    "{at}: not a prefix (the line is not shown: it has characters no prefix has, so this may not be a prefix list at all); check that src_file names a list of prefixes, one per line"
                )
            });
        };
        file.nets.push(p.net);
        if p.host_bits {
            file.host_bits_count += 1;
            if file.host_bits.is_none() {
                file.host_bits = Some((i + 1, l.parse().unwrap_or(p.net)));
            }
        }
    }
    Ok(file)
}

/// Whether a line that failed to parse may be quoted (see [`read_prefix_file`]).
fn looks_like_a_prefix(l: &str) -> bool {
    l.len() <= 50
        && l.chars().any(|c| c == '.' || c == ':')
        && l.chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/'))
}
