//! Golden packets for the rules' precomputed decisions (`SRC4_DECIDE`): an IPv4 source whose
//! DIR-24-8 class settles the first matching rule is decided in two array reads, without the rule
//! walk. These cases prove that the shortcut gives exactly what the walk gives: the same verdict,
//! the same verdict, rule and service counters, first match in file order (an allow rule placed
//! before a deny still wins), and no decision where a packet is not the rules' business at all.
mod common;

use anypop::dataplane::testrun::{XDP_DROP, XDP_PASS, XDP_TX};
use anypop_common::verdict::Reason;
use common::*;

const VIP: [u8; 4] = [203, 0, 113, 10];
const TUNNEL: [u8; 4] = [198, 51, 100, 1];
const BE1: [u8; 4] = [198, 51, 100, 21];
const PLAYER: [u8; 4] = [100, 64, 1, 2];
const FLOOD: [u8; 4] = [198, 18, 7, 7];
const FRIEND: [u8; 4] = [198, 18, 5, 9];
const WEB_BANNED: [u8; 4] = [100, 70, 1, 1];
const UDP_BANNED: [u8; 4] = [100, 80, 1, 1];

/// Rule indices (file order) of [`NETWORK`].
const FRIENDS: usize = 0;
const BLOCKLIST: usize = 1;
const NO_WEB: usize = 2;
const NO_UDP: usize = 3;
const SLOW: usize = 4;

/// Service indices of [`NETWORK`].
const GAME: usize = 0;
const WEB: usize = 1;

const NETWORK: &str = r#"
[defaults]
new_source_cap = 0

[[service]]
name = "game"
vip = "203.0.113.10"
protocol = "udp"
ports = "27015"
backends = ["be-1"]
limit = { pps = 1, burst = 1.0 }

[[service]]
name = "web"
vip = "203.0.113.10"
protocol = "tcp"
ports = "443"
backends = ["be-1"]

# Before the blocklist: a trusted /24 inside it stays reachable and skips the rate limit.
[[rule]]
name = "friends"
action = "allow"
src = ["198.18.5.0/24"]

[[rule]]
name = "blocklist"
action = "deny"
src = ["198.18.0.0/15"]

[[rule]]
name = "no-web"
action = "deny"
services = ["web"]
src = ["100.70.0.0/16"]

# A protocol condition: not decided by the source alone, so these sources walk the rules.
[[rule]]
name = "no-udp"
action = "deny"
protocol = "udp"
src = ["100.80.0.0/16"]

# Source-only limit rule: decided by the class too, then rate-limited with its profile.
[[rule]]
name = "slow"
action = "limit"
profile = "slow"
src = ["100.90.0.0/16"]

[[profile]]
name = "slow"
pps = 1
burst = 1.0

[[node]]
name = "pop-1"
role = "pop"
interfaces = ["a0", "b0"]
tunnel_source = "198.51.100.1"

[[node]]
name = "be-1"
role = "backend"
interface = "eth0"
address = "198.51.100.21"
"#;

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

/// Runs one frame; checks the action and that exactly one `reason` (packets and frame bytes) was
/// counted. Returns the output frame.
fn case(
    t: &mut TestEdge,
    what: &str,
    frame: &[u8],
    ingress: u32,
    action: u32,
    reason: Reason,
) -> Vec<u8> {
    let before = t.snapshot();
    let r = t.run(frame, ingress);
    let after = t.snapshot();
    assert_eq!(r.action, action, "{what}: action");
    assert_eq!(
        delta(&before, &after),
        vec![(reason, 1)],
        "{what}: counters"
    );
    assert_eq!(
        after.get(reason).bytes - before.get(reason).bytes,
        frame.len() as u64,
        "{what}: counted bytes"
    );
    r.output
}

/// The packets and bytes that rule (or service) `i` gained between two readings.
fn gained(before: &[(u64, u64)], after: &[(u64, u64)], i: usize) -> (u64, u64) {
    (after[i].0 - before[i].0, after[i].1 - before[i].1)
}

fn with_edge(network: &'static str, f: impl FnOnce(&mut TestEdge, &Lab) + Send + 'static) {
    std::thread::spawn(move || {
        let lab = build_lab();
        let mut t = TestEdge::new(network, &lab);
        f(&mut t, &lab);
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

#[test]
fn listed_source_is_dropped_with_exact_counters() {
    with_edge(NETWORK, |t, lab| {
        let f = udp4(FLOOD, 5000, VIP, 27015, b"flood");
        let ip_len = (f.len() - 14) as u64;
        let before = hits(t);
        let out = case(t, "flood", &f, lab.a0, XDP_DROP, Reason::DropRule);
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
        case(t, "flood to web", &f, lab.a0, XDP_DROP, Reason::DropRule);
        let after = hits(t);
        assert_eq!(gained(&before.rules, &after.rules, BLOCKLIST).0, 1);
        assert_eq!(gained(&before.services, &after.services, WEB).0, 1);
    });
}

#[test]
fn allow_rule_before_the_deny_still_wins() {
    with_edge(NETWORK, |t, lab| {
        // A friend's /24 lies inside the blocklist, but "friends" comes first: forwarded, counted
        // on "friends", and never rate-limited (game allows 1 pps to everyone else).
        let before = hits(t);
        for i in 0..6u16 {
            let f = udp4(FRIEND, 41000 + i, VIP, 27015, b"friend");
            let want = expected_ipip(&f, 14, BE1_MAC, lab.a0_mac, TUNNEL, BE1);
            let out = case(t, "friend", &f, lab.a0, XDP_TX, Reason::FwdIpip);
            assert_eq!(out, want, "friend {i}: exact IPIP");
        }
        let after = hits(t);
        assert_eq!(gained(&before.rules, &after.rules, FRIENDS).0, 6);
        assert_eq!(gained(&before.rules, &after.rules, BLOCKLIST).0, 0);
        // The neighbouring /24 is only in the blocklist.
        let f = udp4([198, 18, 4, 9], 41000, VIP, 27015, b"x");
        case(t, "next /24", &f, lab.a0, XDP_DROP, Reason::DropRule);
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
    with_edge(NETWORK, |t, lab| {
        // "no-web" applies to web only.
        let before = hits(t);
        case(
            t,
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
            case(
                t,
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
        case(
            t,
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
            case(t, "udp banned, tcp", &f, lab.a0, XDP_TX, Reason::FwdIpip),
            want
        );
    });
}

#[test]
fn listed_source_outside_the_rules_keeps_its_verdict() {
    with_edge(NETWORK, |t, lab| {
        // Rules are per service: a listed source's traffic to the POP itself passes, and traffic
        // that no service takes keeps its own reason.
        let before = hits(t);
        case(
            t,
            "not a vip",
            &udp4(FLOOD, 5000, TUNNEL, 179, b"bgp"),
            lab.a0,
            XDP_PASS,
            Reason::PassNotVip,
        );
        case(
            t,
            "no service",
            &udp4(FLOOD, 5000, VIP, 1234, b"x"),
            lab.a0,
            XDP_DROP,
            Reason::DropNoService,
        );
        let mut bad = udp4(FLOOD, 5000, VIP, 27015, b"x");
        bad[14 + 10] ^= 0xff;
        case(
            t,
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
        case(t, "fragment", &frag, lab.a0, XDP_DROP, Reason::DropFragment);
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
    let second = NETWORK.replacen(
        "[[rule]]\nname = \"friends\"",
        "[[rule]]\nname = \"tiny\"\naction = \"deny\"\nprotocol = \"udp\"\nlength = \"0-28\"\n\n[[rule]]\nname = \"friends\"",
        1,
    );
    let second: &'static str = Box::leak(second.into_boxed_str());
    with_edge(NETWORK, move |t, lab| {
        t.apply(second);
        let (tiny, blocklist) = (0, 2);
        let before = hits(t);
        case(
            t,
            "tiny flood",
            &udp4(FLOOD, 5000, VIP, 27015, b""),
            lab.a0,
            XDP_DROP,
            Reason::DropRule,
        );
        case(
            t,
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
    with_edge(NETWORK, |t, lab| {
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
