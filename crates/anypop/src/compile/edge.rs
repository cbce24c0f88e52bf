//! [`Network`] → the entries of the edge program's config maps, for one POP and one generation
//! slot. Pure: no kernel involved, so every number is unit-tested here.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anypop_common::{
    gcra::{NS_PER_SEC, byte_cost_fixed, packet_cost_ns},
    hash::stable_id,
    layout::*,
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::Names;
use crate::config::{
    Action, ConfigError, FragmentPolicy, Limit, Network, Protocol, Role, Rule, Service,
};

/// A backend as the Maglev builder needs it: (name, weight, backend index).
pub type MaglevInput = (String, u32, u32);

/// Everything the edge program's config maps hold for one generation slot.
#[derive(Clone, Debug, Default)]
pub struct EdgeTables {
    pub generation: u8,
    pub settings: Settings,
    /// IPv6 VIPs and services (IPv4 ones are in the compact maps below).
    pub vips: Vec<VipKey>,
    pub services: Vec<(ServiceKey, u32)>,
    pub vips4: Vec<VipKey4>,
    pub services4: Vec<(ServiceKey4, u32)>,
    /// (index = generation × max_services + service, info)
    pub service_info: Vec<(u32, ServiceInfo)>,
    /// (index = (generation × max_services + service) × 64 + slot, rule)
    pub rules: Vec<(u32, RuleEntry)>,
    /// Raw prefix sets: (prefix, 1 << set id). Covering unions are computed when loading.
    pub prefix_sets_v4: Vec<(Ipv4Net, u64)>,
    pub prefix_sets_v6: Vec<(Ipv6Net, u64)>,
    /// Non-zero entries of the set → rules table.
    pub set_table: Vec<(u32, u64)>,
    /// (generation × MAX_PROFILES + index, profile)
    pub profiles: Vec<(u32, Profile)>,
    /// (generation × MAX_BACKENDS + index, backend)
    pub backends: Vec<(u32, Backend)>,
    pub backend_services: Vec<BackendServiceKey>,
    /// Per IPv4 service with backends: (service index, [(backend name, weight, backend index)]).
    pub maglev_inputs: Vec<(u32, Vec<MaglevInput>)>,
    pub names: Names,
}

fn addr_key(a: IpAddr) -> (u8, [u32; 4]) {
    match a {
        IpAddr::V4(v) => (FAMILY_V4, addr_words(&v.octets())),
        IpAddr::V6(v) => (FAMILY_V6, addr_words(&v.octets())),
    }
}

fn profile_entry(id_name: &str, l: &Limit) -> Profile {
    let mut flags = 0;
    if l.pps.is_some() {
        flags |= PF_PPS;
    }
    if l.bps.is_some() {
        flags |= PF_BPS;
    }
    Profile {
        stable_id: stable_id(id_name.as_bytes()),
        flags,
        packet_cost_ns: l.pps.map(packet_cost_ns).unwrap_or(0),
        byte_cost_fixed: l.bps.map(byte_cost_fixed).unwrap_or(0),
        depth_ns: (l.burst * NS_PER_SEC as f64) as u64,
        block_ns: l.block.map(|d| d.as_nanos() as u64).unwrap_or(0),
    }
}

fn pclass(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PCLASS_TCP,
        Protocol::Udp => PCLASS_UDP,
        Protocol::Icmp => PCLASS_ICMP,
    }
}

/// Compiles the tables of POP `node` for generation slot `generation`.
pub fn compile_edge(
    net: &Network,
    node: &str,
    generation: u8,
    max_services: u32,
) -> Result<EdgeTables, ConfigError> {
    let n = net.node(node)?;
    let err =
        |msg: String| ConfigError::single(&net.origin, n.line, &format!("node {node:?}"), "", msg);
    if n.role != Role::Pop {
        return Err(err(
            "is not a POP; the edge program runs on role = \"pop\" nodes".into(),
        ));
    }
    if net.services.len() as u32 > max_services {
        return Err(err(format!(
            "the file has {} services but the data plane was sized for {max_services}",
            net.services.len()
        )));
    }
    let mut t = EdgeTables {
        generation,
        ..Default::default()
    };
    t.settings = Settings {
        tunnel_source: u32::from_ne_bytes(n.tunnel_source.expect("validated").octets()),
        frag_policy: match net.defaults.fragments {
            FragmentPolicy::Drop => FRAG_DROP,
            FragmentPolicy::Pass => FRAG_PASS,
        },
        new_source_cap: net.defaults.new_source_cap,
        max_services,
        outer_ttl: 64,
        _pad: 0,
        config_hash: net.source_text_hash,
    };
    let backend_index = add_backends(net, &mut t);
    let profile_index = add_profiles(net, &mut t);
    let set_ids = add_prefix_sets(net, &mut t);
    t.names.rules = net.rules.iter().map(|r| r.name.clone()).collect();

    let mut vips = BTreeSet::new();
    for (si, s) in net.services.iter().enumerate() {
        let si = si as u32;
        let gs = generation as u32 * max_services + si;
        t.names.services.push(s.name.clone());
        let family = add_service_keys(s, si, generation, &mut vips, &mut t);
        let own_profile = match &s.limit {
            Some(l) => {
                let idx = t.profiles.len() as u32;
                t.profiles.push((
                    generation as u32 * MAX_PROFILES + idx,
                    profile_entry(&format!("service:{}", s.name), l),
                ));
                t.names.profiles.push(format!("service:{}", s.name));
                idx
            }
            None => NONE,
        };
        let mut info = ServiceInfo {
            stable_id: stable_id(s.name.as_bytes()),
            profile: own_profile,
            rule_count: 0,
            has_backends: s.backends.iter().any(|(_, w)| *w > 0) as u32,
            any_src_rules: 0,
            proto_rules: [0; PCLASS_COUNT],
        };
        let set_slots = add_rules(net, s, gs, &set_ids, &profile_index, &mut info, &mut t)
            .map_err(|slots| {
                err(format!(
                    "more than {slots} rules apply to service {:?}",
                    s.name
                ))
            })?;
        add_set_table(gs, &set_slots, &mut t);
        t.service_info.push((gs, info));

        for (b, _) in &s.backends {
            let bi = backend_index[b.as_str()];
            t.backend_services.push(BackendServiceKey {
                generation: generation as u32,
                service: si,
                addr: t.backends[bi as usize].1.addr,
            });
        }
        if family == FAMILY_V4 && !s.backends.is_empty() {
            t.maglev_inputs.push((
                si,
                s.backends
                    .iter()
                    .map(|(b, w)| (b.clone(), *w, backend_index[b.as_str()]))
                    .collect(),
            ));
        }
    }
    Ok(t)
}

/// Backends: index = position among backend nodes. Returns the index of each name.
fn add_backends<'a>(net: &'a Network, t: &mut EdgeTables) -> BTreeMap<&'a str, u32> {
    let g = t.generation as u32;
    let mut index = BTreeMap::new();
    for (i, b) in net.backend_nodes().enumerate() {
        t.backends.push((
            g * MAX_BACKENDS + i as u32,
            Backend {
                addr: u32::from_ne_bytes(b.address.expect("validated").octets()),
                weight: 1,
            },
        ));
        t.names.backends.push(b.name.clone());
        index.insert(b.name.as_str(), i as u32);
    }
    index
}

/// The named profiles (the services' own limits follow them). Returns the index of each name.
fn add_profiles(net: &Network, t: &mut EdgeTables) -> BTreeMap<String, u32> {
    let g = t.generation as u32;
    let mut index = BTreeMap::new();
    for (i, p) in net.profiles.iter().enumerate() {
        t.profiles.push((
            g * MAX_PROFILES + i as u32,
            profile_entry(&format!("profile:{}", p.name), &p.limit),
        ));
        index.insert(p.name.clone(), i as u32);
        t.names.profiles.push(p.name.clone());
    }
    index
}

/// A rule's source list: rules with the same list share one prefix set.
type SourceList = (Vec<Ipv4Net>, Vec<Ipv6Net>);

/// Prefix sets: one per distinct source list, each prefix tagged with its set's bit. Returns
/// the set id of each list.
fn add_prefix_sets(net: &Network, t: &mut EdgeTables) -> BTreeMap<SourceList, u32> {
    let mut set_ids: BTreeMap<SourceList, u32> = BTreeMap::new();
    for r in &net.rules {
        if r.has_src() {
            let key = (r.src_v4.clone(), r.src_v6.clone());
            let next = set_ids.len() as u32;
            set_ids.entry(key).or_insert(next);
        }
    }
    for ((v4, v6), id) in &set_ids {
        for p in v4 {
            t.prefix_sets_v4.push((*p, 1u64 << id));
        }
        for p in v6 {
            t.prefix_sets_v6.push((*p, 1u64 << id));
        }
    }
    set_ids
}

/// The VIP (once per address) and one key per port of service `s`. Returns its address family.
fn add_service_keys(
    s: &Service,
    si: u32,
    generation: u8,
    vips: &mut BTreeSet<(u8, [u32; 4])>,
    t: &mut EdgeTables,
) -> u8 {
    let g = generation as u32;
    let (family, addr) = addr_key(s.vip);
    if vips.insert((family, addr)) {
        if family == FAMILY_V4 {
            t.vips4.push(VipKey4 {
                addr: addr[0],
                generation: g,
            });
        } else {
            t.vips.push(VipKey {
                generation,
                family,
                _pad: [0; 2],
                addr,
            });
        }
    }
    let proto = match (s.protocol, family) {
        (Protocol::Udp, _) => PROTO_UDP,
        (Protocol::Tcp, _) => PROTO_TCP,
        (Protocol::Icmp, FAMILY_V4) => PROTO_ICMP,
        (Protocol::Icmp, _) => PROTO_ICMPV6,
    };
    let ports: Vec<u16> = if s.protocol == Protocol::Icmp {
        vec![0]
    } else {
        s.ports.iter().flat_map(|&(a, b)| a..=b).collect()
    };
    for port in ports {
        if family == FAMILY_V4 {
            t.services4.push((
                ServiceKey4 {
                    addr: addr[0],
                    port,
                    proto,
                    generation,
                },
                si,
            ));
        } else {
            t.services.push((
                ServiceKey {
                    generation,
                    family,
                    proto,
                    _pad: 0,
                    port,
                    _pad2: 0,
                    addr,
                },
                si,
            ));
        }
    }
    family
}

/// The rules of service `s` (generation-service index `gs`), in file order, in slots 0..k; fills
/// `info`'s rule count and bitmaps. Returns the rule slots naming each prefix set, or
/// `Err(RULES_PER_SERVICE)` when more rules than that apply.
fn add_rules(
    net: &Network,
    s: &Service,
    gs: u32,
    set_ids: &BTreeMap<SourceList, u32>,
    profile_index: &BTreeMap<String, u32>,
    info: &mut ServiceInfo,
    t: &mut EdgeTables,
) -> Result<BTreeMap<u32, u64>, u32> {
    let mut set_slots: BTreeMap<u32, u64> = BTreeMap::new();
    let mut slot = 0u32;
    for (ri, r) in net.rules.iter().enumerate() {
        if !r.applies_to(&s.name) {
            continue;
        }
        if slot >= RULES_PER_SERVICE {
            return Err(RULES_PER_SERVICE);
        }
        let bit = 1u64 << slot;
        if r.has_src() {
            let id = set_ids[&(r.src_v4.clone(), r.src_v6.clone())];
            *set_slots.entry(id).or_default() |= bit;
        } else {
            info.any_src_rules |= bit;
        }
        if r.protocols.is_empty() {
            for c in 0..PCLASS_COUNT {
                info.proto_rules[c] |= bit;
            }
        } else {
            for p in &r.protocols {
                info.proto_rules[pclass(*p) as usize] |= bit;
            }
        }
        t.rules.push((
            gs * RULES_PER_SERVICE + slot,
            rule_entry(ri, r, profile_index),
        ));
        slot += 1;
    }
    info.rule_count = slot;
    Ok(set_slots)
}

/// The kernel's form of rule `r` (number `ri` in the file).
fn rule_entry(ri: usize, r: &Rule, profile_index: &BTreeMap<String, u32>) -> RuleEntry {
    let mut e = RuleEntry {
        rule_index: ri as u32,
        profile: NONE,
        action: match &r.action {
            Action::Deny => ACTION_DENY,
            Action::Allow => ACTION_ALLOW,
            Action::Limit(_) => ACTION_LIMIT,
        },
        ..Default::default()
    };
    if let Action::Limit(p) = &r.action {
        e.profile = profile_index[p];
    }
    if let Some((a, b)) = r.src_ports {
        e.flags |= RF_SPORT;
        (e.sport_lo, e.sport_hi) = (a, b);
    }
    if let Some((a, b)) = r.dst_ports {
        e.flags |= RF_DPORT;
        (e.dport_lo, e.dport_hi) = (a, b);
    }
    if let Some((a, b)) = r.length {
        e.flags |= RF_LEN;
        (e.len_lo, e.len_hi) = (a, b);
    }
    if let Some((a, b)) = r.ttl {
        e.flags |= RF_TTL;
        (e.ttl_lo, e.ttl_hi) = (a, b);
    }
    if let Some((a, b)) = r.icmp_type {
        e.flags |= RF_ICMP_TYPE;
        (e.icmp_type_lo, e.icmp_type_hi) = (a, b);
    }
    if let Some((m, v)) = r.tcp_flags {
        e.flags |= RF_TCP_FLAGS;
        (e.tcp_flags_mask, e.tcp_flags_value) = (m, v);
    }
    e
}

/// Set → rules table of one service: for each chunk of 8 sets and each byte value, the rules
/// naming any set whose bit is on in that byte (non-zero entries only).
fn add_set_table(gs: u32, set_slots: &BTreeMap<u32, u64>, t: &mut EdgeTables) {
    for chunk in 0..SET_CHUNKS {
        for byte in 1..=255u32 {
            let mut rules = 0u64;
            for (&id, &slots) in set_slots {
                if id / 8 == chunk && (byte >> (id % 8)) & 1 == 1 {
                    rules |= slots;
                }
            }
            if rules != 0 {
                t.set_table.push((set_table_index(gs, chunk, byte), rules));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Protocol, parse, sample, tests::text};
    use std::path::Path;

    const EXAMPLE: &str = include_str!("../config/example.toml");

    #[test]
    fn example_compiles_with_concrete_numbers() {
        let net = parse(EXAMPLE, "example.toml", Path::new(".")).unwrap();
        let t = compile_edge(&net, "pop-nyc-1", 1, 64).unwrap();
        assert_eq!(t.generation, 1);
        // rust-eu: 28015-28016 (2 ports) + web: 443 (1 port)
        assert_eq!(t.services4.len(), 3);
        assert!(t.services4.iter().all(|(k, _)| k.generation == 1));
        assert_eq!(t.services4[0].0.addr, u32::from_ne_bytes([203, 0, 113, 10]));
        assert_eq!(t.vips4.len(), 1);
        assert!(
            t.services.is_empty() && t.vips.is_empty(),
            "no IPv6 services in the example"
        );
        assert_eq!(
            t.settings.tunnel_source,
            u32::from_ne_bytes([198, 51, 100, 10])
        );
        // Service rust-eu's own limit: pps 300 → 3,333,333 ns per packet; 4 Mbit → fixed cost.
        let (idx, p) = t
            .profiles
            .iter()
            .find(|(_, p)| p.stable_id == stable_id(b"service:rust-eu"))
            .unwrap();
        assert_eq!(
            *idx,
            MAX_PROFILES + 1,
            "named profile first, then the service's"
        );
        assert_eq!(p.packet_cost_ns, 3_333_333);
        assert_eq!(p.byte_cost_fixed, byte_cost_fixed(4_000_000));
        assert_eq!(p.depth_ns, 2 * NS_PER_SEC);
        assert_eq!(p.block_ns, 30 * NS_PER_SEC);
        assert_eq!(p.flags, PF_PPS | PF_BPS);
        let (_, info) = t.service_info[0];
        assert_eq!(info.profile, 1);
        assert_eq!(info.rule_count, 4, "every rule applies to rust-eu");
        // Slot 0 (blocklist) has a source set; the others do not.
        assert_eq!(info.any_src_rules, 0b1110);
        // syn-limit (slot 1) is TCP only; allow-trusted (slot 3) matches every protocol class.
        assert_eq!(info.proto_rules[PCLASS_UDP as usize] & 0b10, 0);
        assert_eq!(info.proto_rules[PCLASS_TCP as usize] & 0b10, 0b10);
        // Set 0 (the blocklist) → slot 0 in chunk 0, for every byte with bit 0 on.
        let gs = 64;
        let e: Vec<_> = t
            .set_table
            .iter()
            .filter(|(i, _)| *i / 256 == gs * SET_CHUNKS)
            .collect();
        assert_eq!(e.len(), 128);
        assert!(e.iter().all(|(_, r)| *r == 1));
        // The limit rule points at the named profile.
        let limit_rule = t
            .rules
            .iter()
            .find(|(i, _)| *i == gs * RULES_PER_SERVICE + 1)
            .unwrap()
            .1;
        assert_eq!(limit_rule.action, ACTION_LIMIT);
        assert_eq!(limit_rule.profile, 0);
        assert_eq!(limit_rule.tcp_flags_mask, 0x12);
        assert_eq!(limit_rule.tcp_flags_value, 0x02);
        // Maglev inputs for the two IPv4 services, with be-fra-2 draining on rust-eu.
        assert_eq!(t.maglev_inputs.len(), 2);
        assert_eq!(t.maglev_inputs[0].1[1], ("be-fra-2".to_string(), 0, 1));
        assert_eq!(t.backend_services.len(), 3);
    }

    #[test]
    fn backends_cannot_run_the_edge() {
        let net = parse(EXAMPLE, "example.toml", Path::new(".")).unwrap();
        let e = compile_edge(&net, "be-fra-1", 0, 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a POP"), "{e}");
        let e = compile_edge(&net, "nope", 0, 64).unwrap_err().to_string();
        assert!(e.contains("pop-nyc-1") && e.contains("--node"), "{e}");
    }

    // The compile tests that use the config tests' fixture.

    #[test]
    fn ipv6_and_icmp_services_compile_to_the_generic_keys() {
        let extra = sample::network(&[
            sample::service("g6", "2001:db8::10", "udp")
                .list("ports", &["27015", "27020-27021"])
                .list("backends", &["be-1"]),
            sample::service("ping6", "2001:db8::10", "icmp"),
            sample::service("ping4", sample::VIP, "icmp").list("backends", &["be-1"]),
        ]);
        let net = parse(&text(&extra), "net.toml", Path::new(".")).unwrap();
        assert_eq!(net.services[0].protocol, Protocol::Udp);
        let t = compile_edge(&net, "pop-1", 0, 8).unwrap();
        // IPv6: one VIP, 3 UDP ports + 1 ICMPv6 entry (port 0) in the generic maps.
        assert_eq!(t.vips.len(), 1);
        assert_eq!(t.vips[0].family, FAMILY_V6);
        assert_eq!(t.services.len(), 4);
        let icmp6: Vec<_> = t
            .services
            .iter()
            .filter(|(k, _)| k.proto == PROTO_ICMPV6)
            .collect();
        assert_eq!(icmp6.len(), 1);
        assert_eq!((icmp6[0].0.port, icmp6[0].1), (0, 1));
        // IPv4 ICMP: the compact maps, port 0, protocol 1.
        assert_eq!(t.services4.len(), 1);
        assert_eq!(
            (
                t.services4[0].0.proto,
                t.services4[0].0.port,
                t.services4[0].1
            ),
            (PROTO_ICMP, 0, 2)
        );
        // Only IPv4 services are forwarded, so only they get a Maglev table.
        assert_eq!(
            t.maglev_inputs.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn scoped_rules_and_two_prefix_sets_fill_slots_per_service() {
        let extra = sample::network(&[
            sample::udp_service("a", "1"),
            sample::udp_service("b", "2"),
            sample::rule("only-b", "deny")
                .list("services", &["b"])
                .list("src", &["10.0.0.0/8"]),
            sample::rule("both", "deny")
                .list("src", &["2001:db8::/32", "192.0.2.0/24"])
                .list("protocol", &["icmp", "udp"])
                .str("dst_ports", "1-2")
                .str("icmp_type", "8"),
        ]);
        let net = parse(&text(&extra), "net.toml", Path::new(".")).unwrap();
        let t = compile_edge(&net, "pop-1", 1, 4).unwrap();
        let info = |svc: u32| {
            t.service_info
                .iter()
                .find(|(i, _)| *i == 4 + svc)
                .unwrap()
                .1
        };
        // Service a sees only "both" (slot 0); service b sees "only-b" (slot 0) and "both" (slot 1).
        assert_eq!(info(0).rule_count, 1);
        assert_eq!(info(1).rule_count, 2);
        let rule = |svc: u32, slot: u32| {
            t.rules
                .iter()
                .find(|(i, _)| *i == (4 + svc) * RULES_PER_SERVICE + slot)
                .unwrap()
                .1
        };
        assert_eq!(rule(0, 0).rule_index, 1);
        assert_eq!(rule(1, 0).rule_index, 0);
        assert_eq!(rule(1, 1).rule_index, 1);
        let both = rule(1, 1);
        assert_eq!(both.flags, RF_DPORT | RF_ICMP_TYPE);
        assert_eq!((both.dport_lo, both.dport_hi), (1, 2));
        assert_eq!((both.icmp_type_lo, both.icmp_type_hi), (8, 8));
        assert_eq!(both.profile, NONE);
        // Protocol bitmaps for service b: "only-b" takes every class, "both" only ICMP and UDP.
        let b = info(1);
        assert_eq!(b.proto_rules[PCLASS_TCP as usize], 0b01);
        assert_eq!(b.proto_rules[PCLASS_UDP as usize], 0b11);
        assert_eq!(b.proto_rules[PCLASS_ICMP as usize], 0b11);
        assert_eq!(b.proto_rules[PCLASS_OTHER as usize], 0b01);
        assert_eq!(b.any_src_rules, 0);
        // Two prefix sets; each prefix is tagged with its set's bit.
        assert_eq!(t.prefix_sets_v4.len(), 2);
        assert_eq!(t.prefix_sets_v6.len(), 1);
        let bit_of = |p: &str| {
            let p: ipnet::Ipv4Net = p.parse().unwrap();
            t.prefix_sets_v4.iter().find(|(q, _)| *q == p).unwrap().1
        };
        let (only_b, both_bit) = (bit_of("10.0.0.0/8"), bit_of("192.0.2.0/24"));
        assert_ne!(only_b, both_bit);
        assert_eq!(t.prefix_sets_v6[0].1, both_bit);
        // Set table of service b, chunk 0: byte 0b11 (both sets) → both slots.
        let gs = 4 + 1;
        let lookup = |byte: u32| {
            t.set_table
                .iter()
                .find(|(i, _)| *i == set_table_index(gs, 0, byte))
                .map(|e| e.1)
                .unwrap_or(0)
        };
        assert_eq!(lookup(only_b as u32), 0b01);
        assert_eq!(lookup(both_bit as u32), 0b10);
        assert_eq!(lookup(0b11), 0b11);
        // Service a: 128 bytes have the "both" bit on, and every entry maps to slot 0.
        let a_entries: Vec<_> = t
            .set_table
            .iter()
            .filter(|(i, _)| (set_table_index(4, 0, 0)..set_table_index(5, 0, 0)).contains(i))
            .collect();
        assert_eq!(a_entries.len(), 128);
        assert!(a_entries.iter().all(|(_, r)| *r == 1));
    }

    #[test]
    fn compile_refuses_more_services_than_the_maps_hold() {
        let extra =
            sample::network(&[sample::udp_service("a", "1"), sample::udp_service("b", "2")]);
        let net = parse(&text(&extra), "net.toml", Path::new(".")).unwrap();
        let e = compile_edge(&net, "pop-1", 0, 1).unwrap_err().to_string();
        assert!(e.contains("2 services") && e.contains("sized for 1"), "{e}");
    }
}
