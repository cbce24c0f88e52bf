//! Golden packets: the real `edge` program, run by BPF_PROG_TEST_RUN on crafted frames. Each case
//! states its input, the expected XDP action, the exact output bytes and the verdict counter that
//! must move. Every verdict reason the program can produce has a case here (`golden_reasons.rs`
//! checks that one golden case per reason exists, and says why `drop_adjust_failed` has none);
//! `literal_frames_per_path` pins each way out of the program as literal bytes.
mod common;

use anypop::dataplane::testrun::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use anypop_common::verdict::Reason;
use common::*;

/// The network of these tests (see the file for the lab it assumes).
pub const NETWORK: &str = GOLDEN_TOML;

fn with_edge(f: impl FnOnce(&mut TestEdge, &Lab) + Send + 'static) {
    with_edge_net(NETWORK.to_string(), f)
}

#[test]
fn forward_same_interface_is_xdp_tx_with_exact_ipip() {
    with_edge(|t, lab| {
        let f = udp4(PLAYER, 40000, VIP, 27015, b"player input tick 1");
        let want = expected_ipip(&f, 14, BE1_MAC, lab.a0_mac, TUNNEL, BE1);
        t.forwarded_tx("udp to game-tx", &f, lab.a0, &want);
        // DF and TOS of the inner header are carried to the outer one.
        let mut f2 = set_df(&f);
        f2[15] = 0xb8; // DSCP EF
        fix_ip4_checksum(&mut f2, 14);
        let want2 = expected_ipip(&f2, 14, BE1_MAC, lab.a0_mac, TUNNEL, BE1);
        t.forwarded_tx("udp DF+EF", &f2, lab.a0, &want2);
        // Outer checksum is valid by construction of `expected_ipip`; verify independently.
        assert_eq!(checksum(&want2[14..34]), 0);
    });
}

#[test]
fn forward_other_interface_is_redirect() {
    with_edge(|t, lab| {
        let f = udp4(PLAYER, 40001, VIP, 27016, b"hello");
        let want = expected_ipip(&f, 14, BE2_MAC, lab.b0_mac, TUNNEL, BE2);
        t.case(
            "udp to game-redirect",
            &f,
            lab.a0,
            XDP_REDIRECT,
            Reason::FwdIpip,
            Some(&want),
        );
    });
}

#[test]
fn tcp_and_icmp_services_forward() {
    with_edge(|t, lab| {
        let f = tcp4(PLAYER, 50000, VIP, 443, false, true);
        let want = expected_ipip(&f, 14, BE1_MAC, lab.a0_mac, TUNNEL, BE1);
        t.forwarded_tx("tcp ack to web", &f, lab.a0, &want);
        // Echo requests are denied by rule; other ICMP (here an echo reply) is forwarded.
        let echo = icmp4_echo(PLAYER, VIP);
        t.case("icmp echo", &echo, lab.a0, XDP_DROP, Reason::DropRule, None);
        let mut reply = echo.clone();
        reply[34] = 0; // type 0 = echo reply
        let want = expected_ipip(&reply, 14, BE1_MAC, lab.a0_mac, TUNNEL, BE1);
        t.forwarded_tx("icmp echo reply", &reply, lab.a0, &want);
    });
}

#[test]
fn vlan_tags_are_removed_on_forward() {
    with_edge(|t, lab| {
        let f = udp4(PLAYER, 40002, VIP, 27015, b"tagged");
        for tags in [vec![(0x8100u16, 100u16)], vec![(0x88a8, 10), (0x8100, 20)]] {
            let tagged = with_vlans(&f, &tags);
            let l3 = 14 + 4 * tags.len();
            let want = expected_ipip(&tagged, l3, BE1_MAC, lab.a0_mac, TUNNEL, BE1);
            t.forwarded_tx("vlan", &tagged, lab.a0, &want);
        }
    });
}

#[test]
fn every_drop_and_pass_reason() {
    with_edge(|t, lab| {
        let a0 = lab.a0;
        // Not IP at all: an ARP request passes untouched.
        let arp = arp_frame();
        t.case("arp", &arp, a0, XDP_PASS, Reason::PassNotIp, None);
        // The POP's own traffic.
        let own = udp4(PLAYER, 5000, TUNNEL, 179, b"bgp-ish");
        t.case("not a vip", &own, a0, XDP_PASS, Reason::PassNotVip, None);
        // VIP, but no service on that port / protocol.
        t.case(
            "no service",
            &udp4(PLAYER, 5000, VIP, 1234, b"x"),
            a0,
            XDP_DROP,
            Reason::DropNoService,
            None,
        );
        t.case(
            "no tcp svc",
            &tcp4(PLAYER, 5000, VIP, 27015, true, false),
            a0,
            XDP_DROP,
            Reason::DropNoService,
            None,
        );
        // Rules.
        t.case(
            "blocklist",
            &udp4(ATTACKER, 5000, VIP, 27015, b"flood"),
            a0,
            XDP_DROP,
            Reason::DropRule,
            None,
        );
        t.case(
            "empty udp",
            &udp4(PLAYER, 5000, VIP, 27015, b""),
            a0,
            XDP_DROP,
            Reason::DropRule,
            None,
        );
        t.case(
            "ttl 1",
            &udp4_ttl(PLAYER, VIP, 27015, 1),
            a0,
            XDP_DROP,
            Reason::DropRule,
            None,
        );
        // A /32 inside a /24: the DIR table sends the lookup to the trie, which decides per host.
        let host = udp4([100, 99, 0, 7], 5000, VIP, 27015, b"x");
        t.case("one host", &host, a0, XDP_DROP, Reason::DropRule, None);
        let neighbour = udp4([100, 99, 0, 8], 5000, VIP, 27015, b"x");
        let want = expected_ipip(&neighbour, 14, BE1_MAC, lab.a0_mac, TUNNEL, BE1);
        t.forwarded_tx("its /24 neighbour", &neighbour, a0, &want);
        // The trusted rule comes first: the same host on a trusted port is forwarded.
        let trusted = udp4([100, 99, 0, 7], 5000, VIP, 27016, b"x");
        let want = expected_ipip(&trusted, 14, BE2_MAC, lab.b0_mac, TUNNEL, BE2);
        t.case(
            "one host, trusted port",
            &trusted,
            a0,
            XDP_REDIRECT,
            Reason::FwdIpip,
            Some(&want),
        );
        // Fragments: a non-first fragment to a VIP follows the policy (drop).
        let frag = set_frag4(
            &udp4(PLAYER, 5000, VIP, 27015, b"0123456789abcdef"),
            false,
            3,
        );
        t.case(
            "v4 fragment",
            &frag,
            a0,
            XDP_DROP,
            Reason::DropFragment,
            None,
        );
        // A first fragment (MF, offset 0) has its ports: judged like any packet.
        let first = set_frag4(
            &udp4(PLAYER, 5000, VIP, 27016, b"0123456789abcdef"),
            true,
            0,
        );
        let want = expected_ipip(&first, 14, BE2_MAC, lab.b0_mac, TUNNEL, BE2);
        t.case(
            "v4 first fragment",
            &first,
            a0,
            XDP_REDIRECT,
            Reason::FwdIpip,
            Some(&want),
        );
        // Drained service: no backend has weight.
        t.case(
            "drained",
            &udp4(PLAYER, 5000, VIP_DRAINED, 9999, b"x"),
            a0,
            XDP_DROP,
            Reason::DropNoBackend,
            None,
        );
        // No route to the backend.
        t.case(
            "unroutable",
            &udp4(PLAYER, 5000, VIP, 27017, b"x"),
            a0,
            XDP_DROP,
            Reason::DropNoRoute,
            None,
        );
        // Too big once encapsulated (veth MTU 1500): IP length 1490 + 20 > 1500.
        // Without DF (which the sender lets routers fragment, and XDP cannot): dropped.
        let big = udp4(PLAYER, 5000, VIP, 27016, &[0u8; 1490 - 28]);
        let big_no_df = set_frag4(&big, false, 0);
        t.case(
            "mtu without DF",
            &big_no_df,
            a0,
            XDP_DROP,
            Reason::DropMtu,
            None,
        );
        // The same with DF: answered with ICMP "fragmentation needed" (MTU 1500 - 20 for the
        // tunnel), whether the next hop comes from this CPU's cache (primed by a small packet of
        // the same flow) or from the FIB (the cache emptied), and with VLAN tags kept.
        let big_df = set_df(&big);
        t.run(&udp4(PLAYER, 5000, VIP, 27016, b"small"), a0);
        t.case(
            "mtu with DF (cached next hop)",
            &big_df,
            a0,
            XDP_TX,
            Reason::DropMtuIcmp,
            Some(&expected_frag_needed(&big_df, 14, 1480)),
        );
        t.forget_next_hops();
        let tagged = with_vlans(&big_df, &[(0x8100, 7)]);
        t.case(
            "mtu with DF, VLAN (FIB lookup)",
            &tagged,
            a0,
            XDP_TX,
            Reason::DropMtuIcmp,
            Some(&expected_frag_needed(&tagged, 18, 1480)),
        );
        // The answer is a valid ICMP error a player's stack accepts.
        let out = t.run(&big_df, a0).output;
        let parsed = etherparse::SlicedPacket::from_ethernet(&out).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &parsed.net else {
            panic!("not IPv4: {out:?}")
        };
        assert_eq!(ip.header().source(), VIP);
        assert_eq!(ip.header().destination(), PLAYER);
        assert_eq!(checksum(&out[14..34]), 0, "IPv4 header checksum");
        assert_eq!(checksum(&out[34..]), 0, "ICMP checksum");
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &parsed.transport else {
            panic!("not ICMP: {out:?}")
        };
        assert_eq!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1480
                }
            )
        );
        assert_eq!(icmp.payload(), &big_df[14..42], "quotes header + 8 bytes");
        // Malformed L4 to a VIP: UDP length field larger than the packet.
        let mut bad = udp4(PLAYER, 5000, VIP, 27015, b"payload");
        bad[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&200u16.to_be_bytes());
        t.case("udp len", &bad, a0, XDP_DROP, Reason::DropMalformed, None);
        // A corrupt IPv4 header checksum to a VIP is never forwarded.
        let mut badsum = udp4(PLAYER, 5000, VIP, 27016, b"x");
        badsum[14 + 10] ^= 0xff;
        t.case(
            "bad ip checksum",
            &badsum,
            a0,
            XDP_DROP,
            Reason::DropMalformed,
            None,
        );
        // IPv6: service traffic is filtered, then passed to the kernel (v6 forwarding later).
        t.case(
            "v6 service",
            &udp6(PLAYER6, VIP6, 27015),
            a0,
            XDP_PASS,
            Reason::PassV6Service,
            None,
        );
        t.case(
            "v6 blocklist",
            &udp6(ATTACKER6, VIP6, 27015),
            a0,
            XDP_DROP,
            Reason::DropRule,
            None,
        );
        t.case(
            "v6 no service",
            &udp6(PLAYER6, VIP6, 1),
            a0,
            XDP_DROP,
            Reason::DropNoService,
            None,
        );
    });
}

#[test]
fn neighbour_unknown_hands_encapsulated_packet_to_kernel() {
    with_edge(|t, lab| {
        let f = udp4(PLAYER, 40003, VIP, 27018, b"first packet");
        // Addressed to our own MAC so the kernel accepts it, resolves be-4 and forwards it.
        let want = expected_ipip(&f, 14, lab.a0_mac, lab.a0_mac, TUNNEL, [198, 51, 100, 24]);
        t.case(
            "no neigh",
            &f,
            lab.a0,
            XDP_PASS,
            Reason::FwdIpipKernel,
            Some(&want),
        );
    });
}

#[test]
fn ipv6_extension_headers_and_fragments() {
    with_edge(|t, lab| {
        let a0 = lab.a0;
        // Hop-by-hop + destination options + routing, then UDP: parsed through to the service.
        let f = udp6_with_ext(PLAYER6, VIP6, 27015, &[0, 60, 43]);
        t.case(
            "v6 ext chain",
            &f,
            a0,
            XDP_PASS,
            Reason::PassV6Service,
            None,
        );
        let f = udp6_with_ext(ATTACKER6, VIP6, 27015, &[0, 60]);
        t.case("v6 ext blocklist", &f, a0, XDP_DROP, Reason::DropRule, None);
        // A fragment header: policy drop.
        let f = udp6_with_ext(PLAYER6, VIP6, 27015, &[0, 44]);
        t.case("v6 fragment", &f, a0, XDP_DROP, Reason::DropFragment, None);
        // Nine extension headers exceed the bound: refused as malformed (to a VIP).
        let f = udp6_with_ext(PLAYER6, VIP6, 27015, &[60; 9]);
        t.case(
            "v6 too many ext",
            &f,
            a0,
            XDP_DROP,
            Reason::DropMalformed,
            None,
        );
        // Not to a VIP: passes whatever it carries.
        let mut other = PLAYER6;
        other[15] = 0x77;
        let f = udp6_with_ext(PLAYER6, other, 27015, &[60; 9]);
        t.case("v6 not vip", &f, a0, XDP_PASS, Reason::PassNotVip, None);
    });
}

#[test]
fn truncation_at_every_header_boundary_is_malformed() {
    with_edge(|t, lab| {
        let frames = vec![
            ("udp4", udp4(PLAYER, 40000, VIP, 27015, b"abcdefgh")),
            ("tcp4", tcp4(PLAYER, 40000, VIP, 443, false, true)),
            (
                "vlan udp4",
                with_vlans(
                    &udp4(PLAYER, 40000, VIP, 27015, b"abcdefgh"),
                    &[(0x8100, 5), (0x8100, 6)],
                ),
            ),
            ("udp6 ext", udp6_with_ext(PLAYER6, VIP6, 27015, &[0, 60])),
            ("icmp4", icmp4_echo(PLAYER, VIP)),
        ];
        for (name, f) in frames {
            // BPF_PROG_TEST_RUN needs at least an Ethernet header's worth of bytes.
            for len in 14..f.len() {
                let cut = &f[..len];
                let before = t.snapshot();
                let r = t.run(cut, lab.a0);
                let after = t.snapshot();
                let d = delta(&before, &after);
                // A cut inside the MAC addresses/ethertype, the IP header, or anywhere the IP length
                // says more bytes must follow: all malformed, all dropped, nothing else counted.
                assert_eq!(r.action, XDP_DROP, "{name} cut at {len}: action");
                assert_eq!(
                    d,
                    vec![(Reason::DropMalformed, 1)],
                    "{name} cut at {len}: counters"
                );
                assert_eq!(r.output, cut, "{name} cut at {len}: untouched");
            }
        }
    });
}

#[test]
fn rate_limit_then_block_per_source() {
    with_edge(|t, lab| {
        // game-tx allows 1 pps with a 10 s bucket (10 packets at once) and blocks 60 s after a
        // violation. A token comes back only after 1 s; a slower run is judged by its time.
        let f = udp4([100, 100, 0, 1], 40000, VIP, 27015, b"spam");
        let before = t.snapshot();
        let (actions, elapsed) = timed(|| {
            (0..14)
                .map(|_| t.run(&f, lab.a0).action)
                .collect::<Vec<u32>>()
        });
        let after = t.snapshot();
        let fwd = actions.iter().take_while(|a| **a == XDP_TX).count();
        assert!(
            (10..=max_admitted(10, 1, elapsed)).contains(&fwd),
            "{fwd} forwarded in {elapsed:?}: {actions:?}"
        );
        assert!(fwd < 14, "a 14-packet run took {elapsed:?}");
        assert!(actions[fwd..].iter().all(|a| *a == XDP_DROP), "{actions:?}");
        assert_eq!(
            delta(&before, &after),
            vec![
                (Reason::DropRateLimit, 1),
                (Reason::DropBlocked, 13 - fwd as u64),
                (Reason::FwdIpip, fwd as u64)
            ]
        );
        // Another player is unaffected.
        let g = udp4([100, 100, 0, 2], 40000, VIP, 27015, b"fine");
        assert_eq!(t.run(&g, lab.a0).action, XDP_TX);
        // A trusted source (allow rule) skips limits entirely on the services it names.
        let trusted = udp4(PLAYER, 40000, VIP, 27016, b"trusted");
        for _ in 0..30 {
            assert_eq!(t.run(&trusted, lab.a0).action, XDP_REDIRECT);
        }
    });
}

#[test]
fn rule_profile_limits_syn_floods() {
    with_edge(|t, lab| {
        // syn-limit: 1 SYN/s per source with a 2 s bucket (2 at once); ACKs are not SYNs.
        let syn = tcp4(PLAYER, 40000, VIP, 443, true, false);
        let (acts, elapsed) = timed(|| {
            (0..4)
                .map(|_| t.run(&syn, lab.a0).action)
                .collect::<Vec<u32>>()
        });
        let fwd = acts.iter().filter(|a| **a == XDP_TX).count();
        assert_eq!(&acts[..2], &[XDP_TX, XDP_TX], "the burst");
        assert!(
            fwd <= max_admitted(2, 1, elapsed),
            "{acts:?} in {elapsed:?}"
        );
        assert!(fwd < 4, "a 4-packet run took {elapsed:?}");
        if elapsed < std::time::Duration::from_secs(1) {
            assert_eq!(acts, vec![XDP_TX, XDP_TX, XDP_DROP, XDP_DROP]);
        }
        let ack = tcp4(PLAYER, 40000, VIP, 443, false, true);
        assert_eq!(t.run(&ack, lab.a0).action, XDP_TX);
        let hits = t.edge().counters("RULE_HITS").unwrap();
        let slot = t.edge().control().unwrap().active_gen as usize * 1024;
        assert_eq!(hits[slot + 5].packets, 4, "syn-limit (rule #6) hit 4 times");
    });
}

#[test]
fn hit_counters_per_service_and_backend() {
    with_edge(|t, lab| {
        for p in 0..5u16 {
            t.run(&udp4(PLAYER, 41000 + p, VIP, 27016, b"x"), lab.a0);
        }
        t.run(&udp4(ATTACKER, 1, VIP, 27015, b"x"), lab.a0);
        let gen_ = t.edge().control().unwrap().active_gen as usize;
        let svc = t.edge().counters("SVC_HITS").unwrap();
        let ms = t.edge().sizes.max_services as usize;
        assert_eq!(svc[gen_ * ms + 1].packets, 5, "game-redirect");
        assert_eq!(
            svc[gen_ * ms].packets,
            1,
            "game-tx saw the attacker before the rule dropped it"
        );
        let rules = t.edge().counters("RULE_HITS").unwrap();
        assert_eq!(rules[gen_ * 1024].packets, 1, "blocklist");
        assert_eq!(rules[gen_ * 1024 + 1].packets, 5, "trusted");
        let be = t.edge().counters("BE_HITS").unwrap();
        assert_eq!(be[gen_ * 256 + 1].packets, 5, "be-2");
    });
}

/// How many (CPU, backend) next hops `FIB_CACHE` holds.
fn cached_next_hops(t: &TestEdge) -> usize {
    use anypop_common::layout::FibCacheEntry;
    let data = aya::maps::MapData::from_pin(t.pin_dir.join("FIB_CACHE")).unwrap();
    let m: aya::maps::PerCpuArray<_, FibCacheEntry> =
        aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).unwrap();
    (0..m.len())
        .map(|i| {
            m.get(&i, 0)
                .unwrap()
                .iter()
                .filter(|e| e.backend != 0)
                .count()
        })
        .sum()
}

/// Literal frames, as Katran's fixtures: for each way out of the program, the expected bytes
/// are written out here, field by field, not computed by a helper that shares the program's
/// assumptions (TTL, identification, DF, checksums). The checksums were computed by hand and
/// are confirmed by etherparse on every run.
#[test]
fn literal_frames_per_path() {
    with_edge(|t, lab| {
        // The player's packet: 100.64.1.2:40000 → VIP 203.0.113.10:27015, "tick", DF, TTL 64.
        let tick = hex("
            02 00 00 00 0a 00  02 00 00 00 00 99  08 00             # to a0, from the player
            45 00 00 20  00 00 40 00  40 11 99 80                   # 32 bytes, id 0, DF, UDP
            64 40 01 02  cb 00 71 0a                                # 100.64.1.2 → 203.0.113.10
            9c 40 69 87  00 0c 80 ec  74 69 63 6b                   # 40000 → 27015, \"tick\"
        ");
        assert_eq!(
            tick,
            udp4(PLAYER, 40000, VIP, 27015, b"tick"),
            "the input as built"
        );
        let tick_to_be1 = hex("
            02 00 00 00 00 21  02 00 00 00 0a 00  08 00             # to be-1, from a0
            45 00 00 34  00 00 40 00  40 04 e6 48                   # 52 bytes, id 0, DF, TTL 64, IPIP
            c6 33 64 01  c6 33 64 15                                # 198.51.100.1 → 198.51.100.21
            45 00 00 20  00 00 40 00  40 11 99 80                   # the player's packet, unchanged
            64 40 01 02  cb 00 71 0a
            9c 40 69 87  00 0c 80 ec  74 69 63 6b
        ");
        // First packet: the next hop from bpf_fib_lookup, which fills this CPU's cache.
        assert_eq!(cached_next_hops(t), 0);
        t.forwarded_tx("fib", &tick, lab.a0, &tick_to_be1);
        assert!(cached_next_hops(t) >= 1, "the FIB's answer is cached");
        // Second packet: the same bytes from the cached next hop.
        t.forwarded_tx("cached", &tick, lab.a0, &tick_to_be1);

        // Without DF and with DSCP EF (TOS b8): the outer header copies both, so no DF outside.
        let tock = hex("
            02 00 00 00 0a 00  02 00 00 00 00 99  08 00
            45 b8 00 20  00 00 00 00  40 11 d8 c8                   # TOS b8, no DF
            64 40 01 02  cb 00 71 0a
            9c 40 69 87  00 0c 80 e6  74 6f 63 6b                   # \"tock\"
        ");
        let tock_to_be1 = hex("
            02 00 00 00 00 21  02 00 00 00 0a 00  08 00
            45 b8 00 34  00 00 00 00  40 04 25 91                   # TOS b8, no DF, TTL 64, IPIP
            c6 33 64 01  c6 33 64 15
            45 b8 00 20  00 00 00 00  40 11 d8 c8
            64 40 01 02  cb 00 71 0a
            9c 40 69 87  00 0c 80 e6  74 6f 63 6b
        ");
        t.forwarded_tx("no DF, EF", &tock, lab.a0, &tock_to_be1);
        assert_eq!(tick_to_be1[14 + 6], 0x40, "DF in, DF out");
        assert_eq!(tock_to_be1[14 + 6], 0x00, "no DF in, no DF out");

        // Through b0 (XDP_REDIRECT) to be-2: the trusted player to 27016.
        let to_redirect = hex("
            02 00 00 00 0a 00  02 00 00 00 00 99  08 00
            45 00 00 20  00 00 40 00  40 11 99 80
            64 40 01 02  cb 00 71 0a
            9c 40 69 88  00 0c 80 eb  74 69 63 6b                   # 40000 → 27016
        ");
        let to_be2 = hex("
            02 00 00 00 00 22  02 00 00 00 0b 00  08 00             # to be-2, from b0
            45 00 00 34  00 00 40 00  40 04 4e 7b
            c6 33 64 01  c0 00 02 16                                # 198.51.100.1 → 192.0.2.22
            45 00 00 20  00 00 40 00  40 11 99 80
            64 40 01 02  cb 00 71 0a
            9c 40 69 88  00 0c 80 eb  74 69 63 6b
        ");
        t.case(
            "redirect",
            &to_redirect,
            lab.a0,
            XDP_REDIRECT,
            Reason::FwdIpip,
            Some(&to_be2),
        );

        // be-4's neighbour is unknown: encapsulated, addressed to a0 itself, passed to the kernel.
        let to_noneigh = hex("
            02 00 00 00 0a 00  02 00 00 00 00 99  08 00
            45 00 00 20  00 00 40 00  40 11 99 80
            64 40 01 02  cb 00 71 0a
            9c 40 69 8a  00 0c 80 e9  74 69 63 6b                   # 40000 → 27018
        ");
        let to_kernel = hex("
            02 00 00 00 0a 00  02 00 00 00 0a 00  08 00             # to a0, from a0
            45 00 00 34  00 00 40 00  40 04 e6 45
            c6 33 64 01  c6 33 64 18                                # 198.51.100.1 → 198.51.100.24
            45 00 00 20  00 00 40 00  40 11 99 80
            64 40 01 02  cb 00 71 0a
            9c 40 69 8a  00 0c 80 e9  74 69 63 6b
        ");
        t.case(
            "kernel",
            &to_noneigh,
            lab.a0,
            XDP_PASS,
            Reason::FwdIpipKernel,
            Some(&to_kernel),
        );

        // Too big for be-2's path (1490 + 20 > 1500) with DF: ICMP fragmentation needed, MTU
        // 1480, from the VIP back to the player, quoting the IPv4 header and 8 bytes.
        let big = udp4(PLAYER, 40000, VIP, 27016, &[0u8; 1490 - 28]);
        let frag_needed = hex("
            02 00 00 00 00 99  02 00 00 00 0a 00  08 00             # back to the player, from a0
            45 c0 00 38  00 00 00 00  40 01 d8 b8                   # 56 bytes, TOS c0, TTL 64, ICMP
            cb 00 71 0a  64 40 01 02                                # 203.0.113.10 → 100.64.1.2
            03 04 9e 50  00 00 05 c8                                # type 3 code 4, MTU 1480
            45 00 05 d2  00 00 40 00  40 11 93 ce                   # the quote: 1490 bytes, DF
            64 40 01 02  cb 00 71 0a
            9c 40 69 88  05 be 4d 5c                                # and 8 bytes of UDP
        ");
        assert_eq!(&big[14..42], &frag_needed[42..], "the quote is the input's");
        t.case(
            "frag needed",
            &big,
            lab.a0,
            XDP_TX,
            Reason::DropMtuIcmp,
            Some(&frag_needed),
        );

        // The literals themselves, checked by etherparse: every IPv4, UDP and ICMP checksum.
        for f in [&tick_to_be1, &tock_to_be1, &to_be2, &to_kernel] {
            let h = etherparse_checksums(f, 14);
            assert_eq!((h[0].time_to_live, h[0].identification), (64, 0));
            assert_eq!(h[0].dont_fragment, h[1].dont_fragment);
        }
        let h = etherparse_checksums(&frag_needed, 14);
        assert_eq!(h[0].time_to_live, 64);
    });
}

/// The golden network with the new-source cap at 3 a second.
fn capped_network() -> String {
    NETWORK.replace("new_source_cap = 0", "new_source_cap = 3")
}

/// The new-source cap, the guard against random-source floods (the demo's own attack): in each
/// second, at most `new_source_cap` sources without a rate-limit bucket get one; further new
/// sources are dropped (`drop_source_cap`) without one, while sources already known go on. The
/// window starts with the first new source; a run slower than it is judged by its time.
#[test]
fn new_source_cap_drops_random_source_floods() {
    with_edge_net(capped_network(), |t, lab| {
        let from = |i: u8| udp4([100, 100, 7, i], 40000, VIP, 27015, b"tick");
        let order = [1u8, 2, 3, 4, 1, 5];
        let before = t.snapshot();
        let start = std::time::Instant::now();
        let (outs, elapsed) = timed(|| order.map(|i| t.run(&from(i), lab.a0)));
        let after = t.snapshot();
        let acts = outs.each_ref().map(|r| r.action);
        // Sources 1-3 are the window's first three; source 1 again is known.
        assert_eq!(&acts[..3], &[XDP_TX; 3], "{acts:?}");
        assert_eq!(acts[4], XDP_TX, "a known source is not capped: {acts:?}");
        let new_admitted = [0, 1, 2, 3, 5]
            .iter()
            .filter(|&&i| acts[i] == XDP_TX)
            .count();
        let windows = 1 + elapsed.as_secs() as usize;
        assert!(new_admitted <= 3 * windows, "{acts:?} in {elapsed:?}");
        if windows == 1 {
            assert_eq!(acts, [XDP_TX, XDP_TX, XDP_TX, XDP_DROP, XDP_TX, XDP_DROP]);
        }
        let capped = 5 - new_admitted as u64;
        let mut want = vec![
            (Reason::DropSourceCap, capped),
            (Reason::FwdIpip, 6 - capped),
        ];
        want.retain(|(_, n)| *n > 0);
        assert_eq!(delta(&before, &after), want);
        for (r, i) in outs.iter().zip(order) {
            if r.action == XDP_DROP {
                assert_eq!(r.output, from(i), "a capped frame is untouched");
            }
        }
        // One capped case through the golden harness, while the window is still full: a
        // fresh run of four new sources within it (the window is 1 s; this takes milliseconds).
        if windows == 1 && start.elapsed() < std::time::Duration::from_millis(900) {
            t.case(
                "new source over the cap",
                &from(6),
                lab.a0,
                XDP_DROP,
                Reason::DropSourceCap,
                None,
            );
        }
        // A new window admits new sources again, not before a second after the first one.
        let mut i = 10u8;
        loop {
            let r = t.run(&from(i), lab.a0);
            if r.action == XDP_TX {
                assert!(
                    start.elapsed() >= std::time::Duration::from_secs(1),
                    "a new source admitted {:?} after the window began",
                    start.elapsed()
                );
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "no new source admitted 10 s after the window began"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
            i += 1;
        }
    });
}

/// With the fragment policy `pass`, a fragment to a VIP goes to the kernel untouched
/// (`pass_fragment`), IPv4 and IPv6 alike; a first fragment (it has its ports) is still judged
/// and forwarded like any packet, and a fragment for the POP itself is the POP's.
#[test]
fn fragment_policy_pass_hands_fragments_to_the_kernel() {
    let network = NETWORK.replace("fragments = \"drop\"", "fragments = \"pass\"");
    with_edge_net(network, |t, lab| {
        let a0 = lab.a0;
        let body = b"0123456789abcdef";
        let later = set_frag4(&udp4(PLAYER, 5000, VIP, 27015, body), false, 3);
        t.case(
            "v4 fragment",
            &later,
            a0,
            XDP_PASS,
            Reason::PassFragment,
            None,
        );
        let last_of_flood = set_frag4(&udp4(ATTACKER, 5000, VIP, 27015, body), false, 3);
        t.case(
            "v4 fragment from a listed source (rules need ports: the kernel reassembles)",
            &last_of_flood,
            a0,
            XDP_PASS,
            Reason::PassFragment,
            None,
        );
        let v6 = udp6_with_ext(PLAYER6, VIP6, 27015, &[0, 44]);
        t.case("v6 fragment", &v6, a0, XDP_PASS, Reason::PassFragment, None);
        let first = set_frag4(&udp4(PLAYER, 5000, VIP, 27016, body), true, 0);
        let want = expected_ipip(&first, 14, BE2_MAC, lab.b0_mac, TUNNEL, BE2);
        t.case(
            "v4 first fragment",
            &first,
            a0,
            XDP_REDIRECT,
            Reason::FwdIpip,
            Some(&want),
        );
        let own = set_frag4(&udp4(PLAYER, 5000, TUNNEL, 179, body), false, 3);
        t.case(
            "fragment for the POP",
            &own,
            a0,
            XDP_PASS,
            Reason::PassNotVip,
            None,
        );
    });
}
