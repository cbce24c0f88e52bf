//! Every verdict reason has a golden case. One test runs, through the real programs, at least one
//! golden case per reason — `edge` on the golden network (and on its variants with the fragment
//! policy `pass` and a new-source cap), `decap` and `dsr` in native and tunnel mode — each case
//! checking its action, output bytes and counter. The harness records the reasons the cases
//! produced (`common::PRODUCED`), and the test compares them with `Reason::ALL`: a reason added
//! later without a golden case here fails it, and so does one listed in [`NO_GOLDEN_CASE`] that
//! has since found one.
mod common;

use std::collections::HashSet;

use anypop::dataplane::testrun::{XDP_DROP, XDP_PASS, XDP_TX};
use anypop_common::verdict::Reason;
use common::*;

/// Reasons that no frame can produce through BPF_PROG_TEST_RUN, and why.
const NO_GOLDEN_CASE: &[(Reason, &str)] = &[(
    Reason::DropAdjustFailed,
    "the programs' head and tail adjustments cannot fail on a test-run frame: `edge` grows the \
     head by at most 20 bytes (14 + 20 for 14, 18 or 22 of L2), and BPF_PROG_TEST_RUN gives \
     256 bytes of headroom (less the 40-byte xdp_frame and at most 32 bytes of metadata); \
     `decap` shrinks it by the outer header of a frame already checked to hold the inner one; \
     the ICMP answer's resize is counted as drop_mtu_icmp. The verdict guards drivers with \
     less headroom.",
)];

const BE4: [u8; 4] = [198, 51, 100, 24];

const NETWORK: &str = GOLDEN_TOML;

/// Runs `frame` until the program drops it (at most `max` runs), checking that every run before
/// was forwarded (`fwd_ipip`) and the dropping one counted exactly once as `reason`, untouched.
/// For verdicts that depend on what came before within a time window, whatever the machine's
/// speed: `frame(i)` gives the `i`-th frame.
fn until_dropped(
    t: &mut TestEdge,
    lab: &Lab,
    what: &str,
    max: usize,
    frame: impl Fn(usize) -> Vec<u8>,
    reason: Reason,
) {
    for i in 0..max {
        let f = frame(i);
        let before = t.snapshot();
        let r = t.run(&f, lab.a0);
        let d = delta(&before, &t.snapshot());
        if r.action == XDP_DROP {
            assert_eq!(
                d,
                vec![(reason, 1)],
                "{what}: counters of the dropped frame"
            );
            assert_eq!(r.output, f, "{what}: a dropped frame is untouched");
            produced(reason);
            return;
        }
        assert_eq!(
            (r.action, d),
            (XDP_TX, vec![(Reason::FwdIpip, 1)]),
            "{what}: frame {i}"
        );
    }
    panic!("{what}: nothing dropped in {max} frames");
}

fn edge_cases() {
    with_edge_net(NETWORK.to_string(), |t, lab| {
        let a0 = lab.a0;
        let arp = arp_frame();
        t.case("arp", &arp, a0, XDP_PASS, Reason::PassNotIp, None);
        let own = udp4(PLAYER, 5000, TUNNEL, 179, b"bgp-ish");
        t.case("for the POP", &own, a0, XDP_PASS, Reason::PassNotVip, None);
        let mut bad = udp4(PLAYER, 5000, VIP, 27015, b"payload");
        bad[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&200u16.to_be_bytes());
        t.case(
            "udp length",
            &bad,
            a0,
            XDP_DROP,
            Reason::DropMalformed,
            None,
        );
        let body = b"0123456789abcdef";
        let frag = set_frag4(&udp4(PLAYER, 5000, VIP, 27015, body), false, 3);
        t.case("fragment", &frag, a0, XDP_DROP, Reason::DropFragment, None);
        let port = udp4(PLAYER, 5000, VIP, 1234, b"x");
        t.case(
            "no service",
            &port,
            a0,
            XDP_DROP,
            Reason::DropNoService,
            None,
        );
        let flood = udp4(ATTACKER, 5000, VIP, 27015, b"flood");
        t.case("blocklist", &flood, a0, XDP_DROP, Reason::DropRule, None);
        let tick = udp4(PLAYER, 40000, VIP, 27015, b"tick");
        let want = expected_ipip(&tick, 14, BE1_MAC, lab.a0_mac, TUNNEL, BE1);
        t.case("forward", &tick, a0, XDP_TX, Reason::FwdIpip, Some(&want));
        let first = udp4(PLAYER, 40000, VIP, 27018, b"first");
        let want = expected_ipip(&first, 14, lab.a0_mac, lab.a0_mac, TUNNEL, BE4);
        t.case(
            "no neighbour",
            &first,
            a0,
            XDP_PASS,
            Reason::FwdIpipKernel,
            Some(&want),
        );
        let drained = udp4(PLAYER, 5000, VIP_DRAINED, 9999, b"x");
        t.case(
            "drained",
            &drained,
            a0,
            XDP_DROP,
            Reason::DropNoBackend,
            None,
        );
        let lost = udp4(PLAYER, 5000, VIP, 27017, b"x");
        t.case("unroutable", &lost, a0, XDP_DROP, Reason::DropNoRoute, None);
        let big = udp4(PLAYER, 5000, VIP, 27016, &[0u8; 1490 - 28]);
        let big_no_df = set_frag4(&big, false, 0);
        t.case("too big", &big_no_df, a0, XDP_DROP, Reason::DropMtu, None);
        let big_df = set_df(&big);
        let answer = expected_frag_needed(&big_df, 14, 1480);
        t.case(
            "too big, DF",
            &big_df,
            a0,
            XDP_TX,
            Reason::DropMtuIcmp,
            Some(&answer),
        );
        let v6 = udp6(PLAYER6, VIP6, 27015);
        t.case("v6 service", &v6, a0, XDP_PASS, Reason::PassV6Service, None);
        // game-tx: 10 packets at once, then one a second; the first denial blocks for 60 s.
        let spam = udp4([100, 100, 0, 1], 40000, VIP, 27015, b"spam");
        until_dropped(
            t,
            lab,
            "over the limit",
            100,
            |_| spam.clone(),
            Reason::DropRateLimit,
        );
        t.case("blocked", &spam, a0, XDP_DROP, Reason::DropBlocked, None);
    });
    with_edge_net(
        NETWORK.replace("fragments = \"drop\"", "fragments = \"pass\""),
        |t, lab| {
            let body = b"0123456789abcdef";
            let frag = set_frag4(&udp4(PLAYER, 5000, VIP, 27015, body), false, 3);
            t.case(
                "fragment, policy pass",
                &frag,
                lab.a0,
                XDP_PASS,
                Reason::PassFragment,
                None,
            );
        },
    );
    with_edge_net(
        NETWORK.replace("new_source_cap = 0", "new_source_cap = 3"),
        |t, lab| {
            // At most 3 new sources a second: a stream of new sources meets the cap.
            let source = |i: usize| udp4([100, 100, 8, i as u8], 40000, VIP, 27015, b"new");
            until_dropped(t, lab, "new-source cap", 200, source, Reason::DropSourceCap);
        },
    );
}

fn backend_cases() {
    use common::backend::*;
    with_backend(|t| {
        let player = udp4(PLAYER, 40000, VIP, 27015, b"player tick");
        let tunnelled = ipip(&player, POP, ME);
        t.decap_case(
            "decap",
            &tunnelled,
            XDP_PASS,
            Reason::DecapIpip,
            Some(&player),
        );
        t.decap_case("plain udp", &player, XDP_PASS, Reason::PassNotOurs, None);
        let stranger = ipip(&player, [198, 51, 100, 99], ME);
        t.decap_case(
            "unknown pop",
            &stranger,
            XDP_DROP,
            Reason::DropUnknownPop,
            None,
        );
        let mut frag = tunnelled.clone();
        frag[14 + 6] = 0x20;
        fix_ip4_checksum(&mut frag, 14);
        t.decap_case(
            "outer fragment",
            &frag,
            XDP_PASS,
            Reason::PassFragment,
            None,
        );
        let cut = &tunnelled[..14 + 20 + 10];
        t.decap_case(
            "truncated inner",
            cut,
            XDP_DROP,
            Reason::DropMalformed,
            None,
        );
        let reply = udp4(VIP, 27015, PLAYER, 40000, b"server tick");
        let want = with_macs(&reply, GATEWAY_MAC, t.a0_mac);
        t.dsr_case("reply", &reply, TC_ACT_OK, Reason::DsrRewrite, Some(&want));
        let nowhere = udp4(VIP, 27015, [8, 8, 8, 8], 40000, b"x");
        t.dsr_case("no route", &nowhere, TC_ACT_OK, Reason::DsrFibFail, None);
    });
    with_backend_net(tunnel_network(), |t| {
        let player = udp4(PLAYER, 40000, VIP, 27015, b"player tick");
        let tunnelled = ipip(&player, POP, ME);
        t.decap_case("tunnel in", &tunnelled, XDP_PASS, Reason::PassTunnel, None);
        let from_tunnel = udp4([10, 99, 0, 2], 27015, PLAYER, 40000, b"server tick");
        let direct = udp4(VIP, 27015, PLAYER, 40000, b"server tick");
        let want = with_macs(&direct, GATEWAY_MAC, t.a0_mac);
        let reply = tunnelled_reply(&from_tunnel);
        t.dsr_case(
            "tunnel reply",
            &reply,
            TC_ACT_OK,
            Reason::DsrTunnel,
            Some(&want),
        );
    });
}

#[test]
fn every_reason_has_a_golden_case() {
    edge_cases();
    backend_cases();
    let produced: HashSet<Reason> = PRODUCED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    let excused: HashSet<Reason> = NO_GOLDEN_CASE.iter().map(|(r, _)| *r).collect();
    let missing: Vec<&str> = Reason::ALL
        .iter()
        .filter(|r| !produced.contains(r) && !excused.contains(r))
        .map(|r| r.name())
        .collect();
    assert!(
        missing.is_empty(),
        "reasons no golden case produced: {missing:?}; add a case here (and in the program's \
         golden file) or, if no frame can produce it, say why in NO_GOLDEN_CASE"
    );
    for (r, why) in NO_GOLDEN_CASE {
        assert!(
            !produced.contains(r),
            "{} has a golden case now; remove it from NO_GOLDEN_CASE ({why})",
            r.name()
        );
    }
}
