//! Golden packets for the rules' precomputed decisions (`SRC4_DECIDE`): an IPv4 source whose
//! DIR-24-8 class settles the first matching rule is decided in two array reads, without the rule
//! walk. The hand-written cases show what the shortcut must give — the same verdict, rule and
//! service counters as the walk, first match in file order (an allow rule placed before a deny
//! still wins), and no decision where a packet is not the rules' business at all; the
//! differential test at the end checks it on random rule sets and sources: both paths and a
//! reference model of first match, the same verdict and rule for every packet.
mod common;

use anypop::dataplane::testrun::{XDP_DROP, XDP_PASS, XDP_TX};
use anypop_common::verdict::Reason;
use common::*;

const FLOOD: [u8; 4] = [198, 18, 7, 7];
const FRIEND: [u8; 4] = [198, 18, 5, 9];
const WEB_BANNED: [u8; 4] = [100, 70, 1, 1];
const UDP_BANNED: [u8; 4] = [100, 80, 1, 1];

/// Rule indices (file order) of [`network`].
const FRIENDS: usize = 0;
const BLOCKLIST: usize = 1;
const NO_WEB: usize = 2;
const NO_UDP: usize = 3;
const SLOW: usize = 4;

/// Service indices of [`network`].
const GAME: usize = 0;
const WEB: usize = 1;

fn network() -> String {
    lab_network(include_str!("fixtures/decide.toml"))
}

/// Per-rule and per-service packet and byte counters of the live generation.
struct Hits {
    rules: Vec<(u64, u64)>,
    services: Vec<(u64, u64)>,
}

fn hits(t: &mut TestEdge) -> Hits {
    let generation = t.edge().control().unwrap().active_gen as usize;
    let ms = t.edge().sizes.max_services as usize;
    let rules = t.edge().counters("RULE_HITS").unwrap();
    let services = t.edge().counters("SVC_HITS").unwrap();
    Hits {
        rules: rules[generation * 1024..generation * 1024 + 8]
            .iter()
            .map(|c| (c.packets, c.bytes))
            .collect(),
        services: services[generation * ms..generation * ms + 2]
            .iter()
            .map(|c| (c.packets, c.bytes))
            .collect(),
    }
}

/// The packets and bytes that rule (or service) `i` gained between two readings.
fn gained(before: &[(u64, u64)], after: &[(u64, u64)], i: usize) -> (u64, u64) {
    (after[i].0 - before[i].0, after[i].1 - before[i].1)
}

#[test]
fn listed_source_is_dropped_with_exact_counters() {
    with_edge_net(network(), |t, lab| {
        let f = udp4(FLOOD, 5000, VIP, 27015, b"flood");
        let ip_len = (f.len() - 14) as u64;
        let before = hits(t);
        let out = t.counted("flood", &f, lab.a0, XDP_DROP, Reason::DropRule);
        assert_eq!(out, f, "dropped frame untouched");
        let after = hits(t);
        assert_eq!(gained(&before.rules, &after.rules, BLOCKLIST), (1, ip_len));
        for r in [FRIENDS, NO_WEB, NO_UDP] {
            assert_eq!(gained(&before.rules, &after.rules, r), (0, 0), "rule {r}");
        }
        // The service still saw the packet, as with the rule walk.
        assert_eq!(gained(&before.services, &after.services, GAME), (1, ip_len));
        assert_eq!(gained(&before.services, &after.services, WEB), (0, 0));
        // Same for the other service (the blocklist names none, so it applies to both).
        let f = tcp4(FLOOD, 5000, VIP, 443, true, false);
        let before = hits(t);
        t.counted("flood to web", &f, lab.a0, XDP_DROP, Reason::DropRule);
        let after = hits(t);
        assert_eq!(gained(&before.rules, &after.rules, BLOCKLIST).0, 1);
        assert_eq!(gained(&before.services, &after.services, WEB).0, 1);
    });
}

#[test]
fn allow_rule_before_the_deny_still_wins() {
    with_edge_net(network(), |t, lab| {
        // A friend's /24 lies inside the blocklist, but "friends" comes first: forwarded, counted
        // on "friends", and never rate-limited (game allows 1 pps to everyone else).
        let before = hits(t);
        for i in 0..6u16 {
            let f = udp4(FRIEND, 41000 + i, VIP, 27015, b"friend");
            let want = expected_ipip(&f, 14, BE1_MAC, lab.a0_mac, TUNNEL, BE1);
            let out = t.counted("friend", &f, lab.a0, XDP_TX, Reason::FwdIpip);
            assert_eq!(out, want, "friend {i}: exact IPIP");
        }
        let after = hits(t);
        assert_eq!(gained(&before.rules, &after.rules, FRIENDS).0, 6);
        assert_eq!(gained(&before.rules, &after.rules, BLOCKLIST).0, 0);
        // The neighbouring /24 is only in the blocklist.
        let f = udp4([198, 18, 4, 9], 41000, VIP, 27015, b"x");
        t.counted("next /24", &f, lab.a0, XDP_DROP, Reason::DropRule);
        // A player in no list matches no rule and meets the service's limit.
        let before = hits(t);
        let f = udp4(PLAYER, 40000, VIP, 27015, b"tick");
        let (actions, elapsed) = timed(|| {
            (0..6)
                .map(|_| t.run(&f, lab.a0).action)
                .collect::<Vec<u32>>()
        });
        assert_eq!(actions[0], XDP_TX);
        // One packet at once, then one per second: exactly one forwarded in a run under 1 s.
        let fwd = actions.iter().filter(|a| **a == XDP_TX).count();
        assert!(
            fwd <= max_admitted(1, 1, elapsed) && fwd < 6,
            "player rate-limited: {actions:?} in {elapsed:?}"
        );
        let after = hits(t);
        assert_eq!(before.rules, after.rules, "no rule counted for the player");
        assert_eq!(gained(&before.services, &after.services, GAME).0, 6);
    });
}

#[test]
fn rules_for_some_services_or_with_conditions_decide_as_the_walk_does() {
    with_edge_net(network(), |t, lab| {
        // "no-web" applies to web only.
        let before = hits(t);
        t.counted(
            "banned from web",
            &tcp4(WEB_BANNED, 5000, VIP, 443, true, false),
            lab.a0,
            XDP_DROP,
            Reason::DropRule,
        );
        let after = hits(t);
        assert_eq!(gained(&before.rules, &after.rules, NO_WEB).0, 1);
        let f = udp4(WEB_BANNED, 5000, VIP, 27015, b"game is fine");
        let want = expected_ipip(&f, 14, BE1_MAC, lab.a0_mac, TUNNEL, BE1);
        assert_eq!(
            t.counted(
                "banned from web, to game",
                &f,
                lab.a0,
                XDP_TX,
                Reason::FwdIpip
            ),
            want
        );
        // "no-udp" has a protocol condition: UDP dropped on that rule, TCP forwarded.
        let before = hits(t);
        t.counted(
            "udp banned",
            &udp4(UDP_BANNED, 5000, VIP, 27015, b"x"),
            lab.a0,
            XDP_DROP,
            Reason::DropRule,
        );
        let after = hits(t);
        assert_eq!(gained(&before.rules, &after.rules, NO_UDP).0, 1);
        let f = tcp4(UDP_BANNED, 5000, VIP, 443, false, true);
        let want = expected_ipip(&f, 14, BE1_MAC, lab.a0_mac, TUNNEL, BE1);
        assert_eq!(
            t.counted("udp banned, tcp", &f, lab.a0, XDP_TX, Reason::FwdIpip),
            want
        );
    });
}

#[test]
fn listed_source_outside_the_rules_keeps_its_verdict() {
    with_edge_net(network(), |t, lab| {
        // Rules are per service: a listed source's traffic to the POP itself passes, and traffic
        // that no service takes keeps its own reason.
        let before = hits(t);
        t.counted(
            "not a vip",
            &udp4(FLOOD, 5000, TUNNEL, 179, b"bgp"),
            lab.a0,
            XDP_PASS,
            Reason::PassNotVip,
        );
        t.counted(
            "no service",
            &udp4(FLOOD, 5000, VIP, 1234, b"x"),
            lab.a0,
            XDP_DROP,
            Reason::DropNoService,
        );
        let mut bad = udp4(FLOOD, 5000, VIP, 27015, b"x");
        bad[14 + 10] ^= 0xff;
        t.counted(
            "bad checksum",
            &bad,
            lab.a0,
            XDP_DROP,
            Reason::DropMalformed,
        );
        let frag = set_frag4(
            &udp4(FLOOD, 5000, VIP, 27015, b"0123456789abcdef"),
            false,
            3,
        );
        t.counted("fragment", &frag, lab.a0, XDP_DROP, Reason::DropFragment);
        let after = hits(t);
        assert_eq!(before.rules, after.rules, "no rule counted");
        assert_eq!(before.services, after.services, "no service counted");
    });
}

#[test]
fn a_rule_with_conditions_before_the_blocklist_keeps_first_match() {
    // "tiny" (no source condition, a length condition) comes first: a listed source's tiny
    // packet is counted on "tiny", its other packets on "blocklist". A live switch to this file
    // replaces the decisions of the first one.
    let second = network().replacen(
        "[[rule]]\nname = \"friends\"",
        "[[rule]]\nname = \"tiny\"\naction = \"deny\"\nprotocol = \"udp\"\nlength = \"0-28\"\n\n[[rule]]\nname = \"friends\"",
        1,
    );
    with_edge_net(network(), move |t, lab| {
        t.apply(&second);
        let (tiny, blocklist) = (0, 2);
        let before = hits(t);
        t.counted(
            "tiny flood",
            &udp4(FLOOD, 5000, VIP, 27015, b""),
            lab.a0,
            XDP_DROP,
            Reason::DropRule,
        );
        t.counted(
            "flood",
            &udp4(FLOOD, 5000, VIP, 27015, b"payload"),
            lab.a0,
            XDP_DROP,
            Reason::DropRule,
        );
        let after = hits(t);
        assert_eq!(gained(&before.rules, &after.rules, tiny).0, 1);
        assert_eq!(gained(&before.rules, &after.rules, blocklist).0, 1);
    });
}

#[test]
fn decided_limit_rule_applies_its_profile() {
    with_edge_net(network(), |t, lab| {
        // web has no limit of its own; "slow" gives this source 1 packet/s with a 1 s bucket.
        let f = tcp4([100, 90, 1, 1], 5000, VIP, 443, false, true);
        let before = hits(t);
        let snap = t.snapshot();
        let (actions, elapsed) = timed(|| {
            (0..5)
                .map(|_| t.run(&f, lab.a0).action)
                .collect::<Vec<u32>>()
        });
        let after = hits(t);
        assert_eq!(actions[0], XDP_TX);
        let forwarded = actions.iter().filter(|a| **a == XDP_TX).count();
        assert!(
            forwarded <= max_admitted(1, 1, elapsed) && forwarded < 5,
            "{actions:?} in {elapsed:?}"
        );
        let forwarded = forwarded as u64;
        let d = delta(&snap, &t.snapshot());
        assert_eq!(
            d,
            vec![
                (Reason::DropRateLimit, 5 - forwarded),
                (Reason::FwdIpip, forwarded)
            ]
        );
        assert_eq!(gained(&before.rules, &after.rules, SLOW).0, 5);
    });
}

// ---- differential: random rule sets, both paths and a reference model agree ----

mod differential {
    use super::*;
    use anypop_common::layout::{CLASS_USE_LPM, CLASSES, Counter, DECIDE_WALK, DIR_WORDS_BITS};
    use aya::maps::{Array, Map, MapData, PerCpuArray};
    use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

    /// The services of every random network, in file order (their indices).
    const SERVICES: [(&str, u8, u16); 3] = [("game", 17, 27015), ("web", 6, 443), ("ping", 1, 0)];

    #[derive(Clone, Debug)]
    enum Action {
        Deny,
        Allow,
        Limit,
    }

    /// One rule as the reference model reads it (and as it is written into the network file).
    #[derive(Clone, Debug)]
    struct Rule {
        action: Action,
        services: Vec<usize>,
        src: Vec<(u32, u8)>,
        protocol: Option<u8>,
        src_ports: Option<(u16, u16)>,
        dst_ports: Option<(u16, u16)>,
        length: Option<(u16, u16)>,
        ttl: Option<(u8, u8)>,
        /// (mask, value, as written)
        tcp_flags: Option<(u8, u8, &'static str)>,
        icmp_type: Option<(u8, u8)>,
    }

    /// One packet as the reference model reads it.
    #[derive(Clone, Debug)]
    struct Pkt {
        service: usize,
        src: u32,
        sport: u16,
        ttl: u8,
        payload: usize,
        tcp_flags: u8,
        icmp_type: u8,
    }

    impl Pkt {
        fn proto(&self) -> u8 {
            SERVICES[self.service].1
        }
        /// What the program reads as ports: none for ICMP.
        fn ports(&self) -> (u16, u16) {
            match self.proto() {
                1 => (0, 0),
                _ => (self.sport, SERVICES[self.service].2),
            }
        }
        fn ip_len(&self) -> u16 {
            let l4 = match self.proto() {
                17 => 8,
                6 => 20,
                _ => 8,
            };
            (20 + l4 + self.payload) as u16
        }
        fn frame(&self) -> Vec<u8> {
            let payload = vec![0x5a; self.payload];
            let src = self.src.to_be_bytes();
            let ip = from_player().ipv4(src, VIP, self.ttl);
            let mut v = Vec::new();
            match self.proto() {
                17 => ip.udp(self.sport, 27015).write(&mut v, &payload).unwrap(),
                6 => {
                    let mut b = ip.tcp(self.sport, 443, 1, 64240);
                    if self.tcp_flags & 0x02 != 0 {
                        b = b.syn();
                    }
                    if self.tcp_flags & 0x10 != 0 {
                        b = b.ack(1);
                    }
                    if self.tcp_flags & 0x01 != 0 {
                        b = b.fin();
                    }
                    b.write(&mut v, &payload).unwrap()
                }
                _ => {
                    let t = match self.icmp_type {
                        8 => etherparse::Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader {
                            id: 1,
                            seq: 1,
                        }),
                        0 => etherparse::Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader {
                            id: 1,
                            seq: 1,
                        }),
                        t => etherparse::Icmpv4Type::Unknown {
                            type_u8: t,
                            code_u8: 0,
                            bytes5to8: [0; 4],
                        },
                    };
                    ip.icmpv4(t).write(&mut v, &payload).unwrap()
                }
            }
            v
        }
    }

    fn in_range<T: PartialOrd>(v: T, r: Option<(T, T)>) -> bool {
        r.is_none_or(|(lo, hi)| lo <= v && v <= hi)
    }

    impl Rule {
        fn matches(&self, p: &Pkt) -> bool {
            let (sport, dport) = p.ports();
            (self.services.is_empty() || self.services.contains(&p.service))
                && (self.src.is_empty()
                    || self.src.iter().any(|&(net, len)| {
                        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                        p.src & mask == net
                    }))
                && self.protocol.is_none_or(|pr| pr == p.proto())
                && in_range(sport, self.src_ports)
                && in_range(dport, self.dst_ports)
                && in_range(p.ip_len(), self.length)
                && in_range(p.ttl, self.ttl)
                && self
                    .tcp_flags
                    .is_none_or(|(m, v, _)| p.proto() == 6 && p.tcp_flags & m == v)
                && self
                    .icmp_type
                    .is_none_or(|r| p.proto() == 1 && in_range(p.icmp_type, Some(r)))
        }

        fn toml(&self, i: usize) -> String {
            let mut s = format!("[[rule]]\nname = \"r{i}\"\n");
            s += match self.action {
                Action::Deny => "action = \"deny\"\n",
                Action::Allow => "action = \"allow\"\n",
                Action::Limit => "action = \"limit\"\nprofile = \"wide\"\n",
            };
            if !self.services.is_empty() {
                let names: Vec<String> = self
                    .services
                    .iter()
                    .map(|&s| format!("\"{}\"", SERVICES[s].0))
                    .collect();
                s += &format!("services = [{}]\n", names.join(", "));
            }
            if !self.src.is_empty() {
                let nets: Vec<String> = self
                    .src
                    .iter()
                    .map(|&(n, l)| format!("\"{}/{l}\"", std::net::Ipv4Addr::from(n)))
                    .collect();
                s += &format!("src = [{}]\n", nets.join(", "));
            }
            if let Some(p) = self.protocol {
                let name = match p {
                    17 => "udp",
                    6 => "tcp",
                    _ => "icmp",
                };
                s += &format!("protocol = \"{name}\"\n");
            }
            let range = |s: &mut String, k: &str, r: Option<(u64, u64)>| {
                if let Some((a, b)) = r {
                    *s += &format!("{k} = \"{a}-{b}\"\n");
                }
            };
            let wide = |r: Option<(u16, u16)>| r.map(|(a, b)| (a as u64, b as u64));
            let wide8 = |r: Option<(u8, u8)>| r.map(|(a, b)| (a as u64, b as u64));
            range(&mut s, "src_ports", wide(self.src_ports));
            range(&mut s, "dst_ports", wide(self.dst_ports));
            range(&mut s, "length", wide(self.length));
            range(&mut s, "ttl", wide8(self.ttl));
            range(&mut s, "icmp_type", wide8(self.icmp_type));
            if let Some((_, _, text)) = self.tcp_flags {
                s += &format!("tcp_flags = \"{text}\"\n");
            }
            s + "\n"
        }
    }

    /// Sources are drawn from 10.0-1.0-3.x, so that random prefixes of all lengths overlap
    /// them: /8 to /24 (decided by the DIR-24-8 class) and longer (the /24 goes to the trie).
    fn random_source(rng: &mut StdRng) -> u32 {
        if rng.gen_bool(0.1) {
            return u32::from_be_bytes([11, 0, 0, rng.r#gen()]);
        }
        u32::from_be_bytes([10, rng.gen_range(0..2), rng.gen_range(0..4), rng.r#gen()])
    }

    fn random_prefix(rng: &mut StdRng) -> (u32, u8) {
        let len = *[8u8, 14, 15, 16, 22, 23, 24, 24, 25, 28, 30, 32]
            .choose(rng)
            .unwrap();
        let a = random_source(rng);
        (a & (u32::MAX << (32 - len)), len)
    }

    fn random_range16(rng: &mut StdRng, values: &[u16]) -> (u16, u16) {
        let a = *values.choose(rng).unwrap();
        let b = *values.choose(rng).unwrap();
        (a.min(b), a.max(b))
    }

    fn random_rule(rng: &mut StdRng) -> Rule {
        let action = match rng.gen_range(0..10) {
            0..5 => Action::Deny,
            5..8 => Action::Allow,
            _ => Action::Limit,
        };
        let services = if rng.gen_bool(0.7) {
            vec![]
        } else {
            let mut s: Vec<usize> = (0..3).filter(|_| rng.gen_bool(0.5)).collect();
            if s.is_empty() {
                s.push(rng.gen_range(0..3));
            }
            s
        };
        let src = if rng.gen_bool(0.75) {
            (0..rng.gen_range(1..=3))
                .map(|_| random_prefix(rng))
                .collect()
        } else {
            vec![]
        };
        // Most rules have no condition besides the source, so that many classes are decided.
        let cond = |rng: &mut StdRng, p: f64| rng.gen_bool(p);
        let mut protocol = cond(rng, 0.2).then(|| *[17u8, 6, 1].choose(rng).unwrap());
        // The protocols the rule can see: its own, narrowed by its services' (game: udp, web:
        // tcp, ping: icmp). A rule whose protocol none of its services carries is dropped to its
        // services' protocols, and fields its protocols cannot carry are left out: `check`
        // refuses such rules (they could never match), and the generator writes valid files.
        const SERVICE_PROTOS: [u8; 3] = [17, 6, 1];
        let of_services: Vec<u8> = if services.is_empty() {
            SERVICE_PROTOS.to_vec()
        } else {
            services.iter().map(|&i| SERVICE_PROTOS[i]).collect()
        };
        if protocol.is_some_and(|p| !of_services.contains(&p)) {
            protocol = None;
        }
        let sees: Vec<u8> = match protocol {
            Some(p) => vec![p],
            None => of_services,
        };
        let (ports_ok, tcp_ok, icmp_ok) = (
            sees.iter().any(|p| *p != 1),
            sees.contains(&6),
            sees.contains(&1),
        );
        let ports = [0u16, 1000, 27015, 30000, 40000, 65535];
        let mut rule = Rule {
            action,
            services,
            src,
            protocol,
            src_ports: cond(rng, 0.1).then(|| random_range16(rng, &ports)),
            dst_ports: cond(rng, 0.1).then(|| random_range16(rng, &[0, 443, 1000, 27015])),
            length: cond(rng, 0.1).then(|| random_range16(rng, &[0, 28, 40, 60, 200])),
            ttl: cond(rng, 0.1).then(|| *[(0, 1), (2, 64), (65, 255)].choose(rng).unwrap()),
            tcp_flags: cond(rng, 0.08).then(|| {
                *[
                    (0x12, 0x02, "SYN,!ACK"),
                    (0x10, 0x10, "ACK"),
                    (0x01, 0x01, "FIN"),
                ]
                .choose(rng)
                .unwrap()
            }),
            icmp_type: cond(rng, 0.08).then(|| *[(8, 8), (0, 3)].choose(rng).unwrap()),
        };
        if !ports_ok {
            (rule.src_ports, rule.dst_ports) = (None, None);
        }
        if !tcp_ok {
            rule.tcp_flags = None;
        }
        if !icmp_ok {
            rule.icmp_type = None;
        }
        rule
    }

    fn random_packet(rng: &mut StdRng) -> Pkt {
        Pkt {
            service: rng.gen_range(0..3),
            src: random_source(rng),
            sport: *[500u16, 1000, 27015, 40000, 65535].choose(rng).unwrap(),
            ttl: *[1u8, 2, 64, 128].choose(rng).unwrap(),
            payload: *[0usize, 4, 12, 100].choose(rng).unwrap(),
            tcp_flags: *[0x02u8, 0x10, 0x12, 0x11].choose(rng).unwrap(),
            icmp_type: *[8u8, 0, 3, 11].choose(rng).unwrap(),
        }
    }

    fn network(rules: &[Rule]) -> String {
        let mut s = String::from(
            "[[service]]\nname = \"game\"\nvip = \"203.0.113.10\"\nprotocol = \"udp\"\n\
             ports = \"27015\"\nbackends = [\"be-1\"]\n\n\
             [[service]]\nname = \"web\"\nvip = \"203.0.113.10\"\nprotocol = \"tcp\"\n\
             ports = \"443\"\nbackends = [\"be-1\"]\n\n\
             [[service]]\nname = \"ping\"\nvip = \"203.0.113.10\"\nprotocol = \"icmp\"\n\
             backends = [\"be-1\"]\n\n\
             [[profile]]\nname = \"wide\"\npps = 1000000\nburst = 1.0\n\n",
        );
        for (i, r) in rules.iter().enumerate() {
            s += &r.toml(i);
        }
        lab_network(&s)
    }

    /// What the program did with a packet: action, reason, and the rule counted (if any).
    type Outcome = (u32, Reason, Option<usize>);

    /// What the rules say, first match in file order.
    fn model(rules: &[Rule], p: &Pkt) -> Outcome {
        match rules.iter().position(|r| r.matches(p)) {
            Some(i) => match rules[i].action {
                Action::Deny => (XDP_DROP, Reason::DropRule, Some(i)),
                _ => (XDP_TX, Reason::FwdIpip, Some(i)),
            },
            None => (XDP_TX, Reason::FwdIpip, None),
        }
    }

    fn per_cpu_packets(m: &PerCpuArray<MapData, Counter>, i: u32) -> u64 {
        m.get(&i, 0).unwrap().iter().map(|c| c.packets).sum()
    }

    /// Runs `p` and reads which reason and which rule counted it.
    fn outcome(t: &mut TestEdge, lab: &Lab, rules: usize, p: &Pkt) -> Outcome {
        let generation = t.edge().control().unwrap().active_gen & 1;
        let open = |name: &str| {
            let data = MapData::from_pin(t.pin_dir.join(name)).unwrap();
            PerCpuArray::<MapData, Counter>::try_from(Map::PerCpuArray(data)).unwrap()
        };
        let (counters, hits) = (open("COUNTERS"), open("RULE_HITS"));
        let reasons = |c: &PerCpuArray<MapData, Counter>| -> Vec<u64> {
            Reason::ALL
                .iter()
                .map(|r| per_cpu_packets(c, *r as u32))
                .collect()
        };
        let rule_hits = |h: &PerCpuArray<MapData, Counter>| -> Vec<u64> {
            (0..rules as u32)
                .map(|i| per_cpu_packets(h, generation * 1024 + i))
                .collect()
        };
        let (r0, h0) = (reasons(&counters), rule_hits(&hits));
        let frame = p.frame();
        let r = t.run(&frame, lab.a0);
        let (r1, h1) = (reasons(&counters), rule_hits(&hits));
        let counted: Vec<Reason> = Reason::ALL
            .iter()
            .zip(r0.iter().zip(&r1))
            .flat_map(|(r, (a, b))| std::iter::repeat_n(*r, (b - a) as usize))
            .collect();
        assert_eq!(counted.len(), 1, "{p:?}: one verdict, got {counted:?}");
        let hit: Vec<usize> = (0..rules).filter(|&i| h1[i] != h0[i]).collect();
        assert!(hit.len() <= 1, "{p:?}: rules {hit:?} all counted");
        (r.action, counted[0], hit.first().copied())
    }

    /// The precomputed decision the program reads for `p` (None: it walks, the class is the
    /// trie's).
    fn decision(t: &TestEdge, p: &Pkt) -> Option<u32> {
        let generation = {
            let data = MapData::from_pin(t.pin_dir.join("CONTROL")).unwrap();
            let m: Array<MapData, anypop_common::layout::Control> =
                Array::try_from(Map::Array(data)).unwrap();
            m.get(&0, 0).unwrap().active_gen & 1
        };
        let dir: Array<MapData, u64> = Array::try_from(Map::Array(
            MapData::from_pin(t.pin_dir.join("SRC4_DIR")).unwrap(),
        ))
        .unwrap();
        let word = dir
            .get(&((generation << DIR_WORDS_BITS) | (p.src >> 11)), 0)
            .unwrap();
        let class = (word >> (((p.src >> 8) & 7) * 8)) & 0xff;
        if class == CLASS_USE_LPM {
            return None;
        }
        let decide: Array<MapData, u32> = Array::try_from(Map::Array(
            MapData::from_pin(t.pin_dir.join("SRC4_DECIDE")).unwrap(),
        ))
        .unwrap();
        let gs = generation * 8 + p.service as u32;
        Some(decide.get(&(gs * CLASSES + class as u32), 0).unwrap())
    }

    /// Makes every source of the live generation walk the rules (as if nothing were
    /// precomputed): the other path to the same verdicts.
    fn force_walk(t: &mut TestEdge) {
        let generation = t.edge().control().unwrap().active_gen & 1;
        let data = MapData::from_pin(t.pin_dir.join("SRC4_DECIDE")).unwrap();
        let mut decide: Array<MapData, u32> = Array::try_from(Map::Array(data)).unwrap();
        for i in generation * 8 * CLASSES..(generation + 1) * 8 * CLASSES {
            decide.set(i, DECIDE_WALK, 0).unwrap();
        }
    }

    /// Random rule sets and sources, every packet through the program twice — with the
    /// precomputed decisions (`SRC4_DECIDE`), and with every source forced to walk the rules —
    /// and through a reference model of first match in file order: the same action, verdict and
    /// rule counter every time. Seeded: a failure names the set and packet to replay.
    #[test]
    fn precomputed_decisions_equal_the_rule_walk_and_the_model() {
        in_lab(|lab| {
            let mut t = TestEdge::new(&network(&[]), lab);
            let seed = 0x6465_6369_6465;
            let mut rng = StdRng::seed_from_u64(seed);
            let (mut decided_deny, mut decided_pass, mut decided_none, mut walked) = (0, 0, 0, 0);
            for set in 0..30 {
                let rules: Vec<Rule> = (0..rng.gen_range(1..=10))
                    .map(|_| random_rule(&mut rng))
                    .collect();
                t.apply(&network(&rules));
                let packets: Vec<Pkt> = (0..100).map(|_| random_packet(&mut rng)).collect();
                let precomputed: Vec<Outcome> = packets
                    .iter()
                    .map(|p| {
                        match decision(&t, p) {
                            Some(d) if d & anypop_common::layout::DECIDE_DENY != 0 => {
                                decided_deny += 1
                            }
                            Some(1) => decided_none += 1,
                            Some(0) | None => walked += 1,
                            Some(_) => decided_pass += 1,
                        }
                        outcome(&mut t, lab, rules.len(), p)
                    })
                    .collect();
                force_walk(&mut t);
                for (i, p) in packets.iter().enumerate() {
                    let walk = outcome(&mut t, lab, rules.len(), p);
                    let want = model(&rules, p);
                    let ctx = || {
                        format!(
                            "seed {seed:#x}, set {set}, packet {i}: {p:?}\nrules:\n{}",
                            rules
                                .iter()
                                .enumerate()
                                .map(|(i, r)| r.toml(i))
                                .collect::<String>()
                        )
                    };
                    assert_eq!(precomputed[i], walk, "precomputed vs walk; {}", ctx());
                    assert_eq!(walk, want, "program vs model; {}", ctx());
                }
            }
            eprintln!(
                "precomputed: deny {decided_deny}, allow/limit {decided_pass}, no rule \
                 {decided_none}; walked {walked}"
            );
            // Both paths were taken, for every kind of precomputed decision.
            assert!(
                decided_deny > 50 && decided_pass > 50 && decided_none > 50 && walked > 50,
                "deny {decided_deny}, allow/limit {decided_pass}, no rule {decided_none}, \
                 walked {walked}"
            );
        });
    }
}
