//! Golden packets for the backend's programs, run by BPF_PROG_TEST_RUN on the real objects:
//! `decap` (XDP) and `dsr` (TC egress, with an `__sk_buff` context). Every reason, exact output
//! bytes, counters. The lab and the harness are in `common/backend.rs`.
mod common;

use anypop::dataplane::testrun::{XDP_DROP, XDP_PASS, run_tc};
use anypop_common::verdict::Reason;
use common::backend::*;
use common::*;

#[test]
fn decap_every_reason_with_exact_bytes() {
    with_backend(|t| {
        let player = udp4(PLAYER, 40000, VIP, 27015, b"player tick");
        let tunnelled = ipip(&player, POP, ME);
        // Decapsulated: the same Ethernet header, then the player's packet byte for byte.
        t.decap_case(
            "udp from pop",
            &tunnelled,
            XDP_PASS,
            Reason::DecapIpip,
            Some(&player),
        );
        let tcp = tcp4(PLAYER, 50000, VIP, 443, true, false);
        t.decap_case(
            "tcp from pop",
            &ipip(&tcp, POP, ME),
            XDP_PASS,
            Reason::DecapIpip,
            Some(&tcp),
        );
        // VLAN tags stay in front of the inner packet.
        let tagged = with_vlans(&tunnelled, &[(0x8100, 7)]);
        let want = with_vlans(&player, &[(0x8100, 7)]);
        t.decap_case("vlan", &tagged, XDP_PASS, Reason::DecapIpip, Some(&want));
        // No open relay.
        t.decap_case(
            "unknown pop",
            &ipip(&player, [198, 51, 100, 99], ME),
            XDP_DROP,
            Reason::DropUnknownPop,
            None,
        );
        // Not ours: other destination, other service, not IPIP.
        t.decap_case(
            "other address",
            &ipip(&player, POP, [192, 0, 2, 99]),
            XDP_PASS,
            Reason::PassNotOurs,
            None,
        );
        let elsewhere = udp4(PLAYER, 40000, VIP, 27016, b"x");
        t.decap_case(
            "not our service",
            &ipip(&elsewhere, POP, ME),
            XDP_PASS,
            Reason::PassNotOurs,
            None,
        );
        t.decap_case("plain udp", &player, XDP_PASS, Reason::PassNotOurs, None);
        // Truncated inside the inner header.
        let cut = &tunnelled[..14 + 20 + 10];
        t.decap_case(
            "truncated inner",
            cut,
            XDP_DROP,
            Reason::DropMalformed,
            None,
        );
    });
}

#[test]
fn dsr_sends_service_replies_to_the_fib_next_hop() {
    with_backend(|t| {
        // The game server's reply: source VIP:27015, to the player. Addressed by the stack to
        // whatever it resolved; the program sets the FIB's next hop and our MAC.
        let reply = udp4(VIP, 27015, PLAYER, 40000, b"server tick");
        let want = with_macs(&reply, GATEWAY_MAC, t.a0_mac);
        t.dsr_case(
            "service reply",
            &reply,
            TC_ACT_OK,
            Reason::DsrRewrite,
            Some(&want),
        );
        let tcp = tcp4(VIP, 443, PLAYER, 50000, true, true);
        let want = with_macs(&tcp, GATEWAY_MAC, t.a0_mac);
        t.dsr_case(
            "tcp reply",
            &tcp,
            TC_ACT_OK,
            Reason::DsrRewrite,
            Some(&want),
        );
        // Not a service port, or not from a VIP: untouched.
        t.dsr_case(
            "other port",
            &udp4(VIP, 9999, PLAYER, 40000, b"x"),
            TC_ACT_OK,
            Reason::PassNotOurs,
            None,
        );
        t.dsr_case(
            "other source",
            &udp4(ME, 27015, PLAYER, 40000, b"x"),
            TC_ACT_OK,
            Reason::PassNotOurs,
            None,
        );
        // No route to the player (or forwarding off): counted, left to the kernel's own routing.
        t.dsr_case(
            "no route",
            &udp4(VIP, 27015, [8, 8, 8, 8], 40000, b"x"),
            TC_ACT_OK,
            Reason::DsrFibFail,
            None,
        );
    });
}

/// Replies to a player reuse the next hop `dsr` looked up for it (a per-CPU cache), and follow
/// the network when it changes: a new gateway MAC reaches the replies within the cache's
/// lifetime (250 jiffies: 1 s at HZ=250, 2.5 s at HZ=100; the test waits up to 10 s), and a
/// packet larger than the route's MTU is never sent from the cache.
#[test]
fn dsr_next_hop_cache_follows_a_changed_gateway_and_respects_the_mtu() {
    with_backend(|t| {
        let reply = udp4(VIP, 27015, PLAYER, 40000, b"server tick");
        let old = with_macs(&reply, GATEWAY_MAC, t.a0_mac);
        t.dsr_case("first", &reply, TC_ACT_OK, Reason::DsrRewrite, Some(&old));
        t.dsr_case("cached", &reply, TC_ACT_OK, Reason::DsrRewrite, Some(&old));

        // The gateway's MAC changes (a router replaced, a VRRP failover): replies carry the old
        // one until the cached answer expires, then the new one.
        set_gateway_mac("02:00:00:00:00:02");
        let new = with_macs(&reply, [0x02, 0, 0, 0, 0, 0x02], t.a0_mac);
        let changed = std::time::Instant::now();
        loop {
            let a0 = t.a0;
            let r = run_tc(t.plane().dsr(), &reply, a0).unwrap();
            assert_eq!(r.action, TC_ACT_OK);
            if r.output == new {
                break;
            }
            assert_eq!(
                r.output, old,
                "a reply carries the old or the new gateway MAC"
            );
            assert!(
                changed.elapsed() < std::time::Duration::from_secs(10),
                "replies still go to the old gateway MAC 10 s after it changed"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }

        // A small MTU on the way out: a reply above it is left to the kernel (which fragments
        // or reports it), even right after a small reply put the next hop in the cache. (A
        // player not seen yet, so its first reply asks the FIB and caches the new MTU.)
        sh(&["ip", "link", "set", "dev", "a0", "mtu", "600"]);
        let player2 = [100, 64, 1, 3];
        let small = udp4(VIP, 27015, player2, 40000, b"server tick");
        let want = with_macs(&small, [0x02, 0, 0, 0, 0, 0x02], t.a0_mac);
        t.dsr_case("small", &small, TC_ACT_OK, Reason::DsrRewrite, Some(&want));
        t.dsr_case(
            "small, cached",
            &small,
            TC_ACT_OK,
            Reason::DsrRewrite,
            Some(&want),
        );
        let big = udp4(VIP, 27015, player2, 40000, &[7u8; 1000]);
        t.dsr_case("too big", &big, TC_ACT_OK, Reason::DsrFibFail, None);
    });
}

#[test]
fn tunnel_mode_remembers_flows_and_rewrites_replies() {
    with_backend_net(tunnel_network(), |t| {
        // In: left for the kernel's tunnel, flow remembered.
        let player = udp4(PLAYER, 40000, VIP, 27015, b"player tick");
        let tunnelled = ipip(&player, POP, ME);
        t.decap_case("tunnel in", &tunnelled, XDP_PASS, Reason::PassTunnel, None);
        let syn = tcp4(PLAYER, 50000, VIP, 443, true, false);
        t.decap_case(
            "tunnel in tcp",
            &ipip(&syn, POP, ME),
            XDP_PASS,
            Reason::PassTunnel,
            None,
        );

        // Out: the server answered from the tunnel address into the tunnel. The program strips
        // the outer header and gives the reply the VIP; the result must equal the packet the
        // server would have sent from the VIP, checksums included.
        let from_tunnel = udp4([10, 99, 0, 2], 27015, PLAYER, 40000, b"server tick");
        let want = with_macs(
            &udp4(VIP, 27015, PLAYER, 40000, b"server tick"),
            GATEWAY_MAC,
            t.a0_mac,
        );
        t.dsr_case(
            "tunnel reply udp",
            &tunnelled_reply(&from_tunnel),
            TC_ACT_OK,
            Reason::DsrTunnel,
            Some(&want),
        );
        let synack = tcp4([10, 99, 0, 2], 443, PLAYER, 50000, true, true);
        let want = with_macs(
            &tcp4(VIP, 443, PLAYER, 50000, true, true),
            GATEWAY_MAC,
            t.a0_mac,
        );
        t.dsr_case(
            "tunnel reply tcp",
            &tunnelled_reply(&synack),
            TC_ACT_OK,
            Reason::DsrTunnel,
            Some(&want),
        );

        // A UDP reply without a checksum (0: none) keeps none: it is not "fixed" into a wrong one.
        let no_sum = |frame: &[u8]| {
            let mut v = frame.to_vec();
            v[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
            v
        };
        let from_tunnel = no_sum(&udp4([10, 99, 0, 2], 27015, PLAYER, 40000, b"server tick"));
        let want = with_macs(
            &no_sum(&udp4(VIP, 27015, PLAYER, 40000, b"server tick")),
            GATEWAY_MAC,
            t.a0_mac,
        );
        t.dsr_case(
            "tunnel reply udp without checksum",
            &tunnelled_reply(&from_tunnel),
            TC_ACT_OK,
            Reason::DsrTunnel,
            Some(&want),
        );

        // A reply for a flow never seen coming in is not rewritten: never an arbitrary source.
        let stranger = udp4([10, 99, 0, 2], 27015, PLAYER, 41111, b"x");
        t.dsr_case(
            "unknown flow",
            &tunnelled_reply(&stranger),
            TC_ACT_OK,
            Reason::PassNotOurs,
            None,
        );
        // IPIP to something that is not a POP is not ours either.
        let other = ipip(&from_tunnel, ME, [198, 51, 100, 77]);
        t.dsr_case(
            "ipip to non-pop",
            &other,
            TC_ACT_OK,
            Reason::PassNotOurs,
            None,
        );
    });
}

/// `frame` with its outer IPv4 header (at offset 14) changed by `f`, checksum fixed.
fn outer_edit(frame: &[u8], f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut v = frame.to_vec();
    f(&mut v[14..34]);
    fix_ip4_checksum(&mut v, 14);
    v
}

/// Sets an IPv4 header's total length (big-endian bytes 2-3).
fn set_tot_len(h: &mut [u8], len: usize) {
    h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
}

/// Outer IPv4 fragments are never decapsulated (a fragment holds only part of the inner packet,
/// or, beyond the first, bytes that merely look like one): they go to the kernel, which
/// reassembles them. Outer or inner lengths that disagree with the frame are malformed.
#[test]
fn decap_passes_outer_fragments_and_drops_inconsistent_lengths() {
    with_backend(|t| {
        let player = udp4(
            PLAYER,
            40000,
            VIP,
            27015,
            b"player tick, long enough to split",
        );
        let tunnelled = ipip(&player, POP, ME);
        let whole = tunnelled.len() - 14;

        // The first outer fragment (MF, offset 0): the inner header is there, its tail is not.
        let first = outer_edit(&tunnelled[..14 + 20 + 32], |h| {
            set_tot_len(h, 20 + 32);
            h[6] = 0x20; // MF
            h[7] = 0;
        });
        t.decap_case(
            "outer first fragment",
            &first,
            XDP_PASS,
            Reason::PassFragment,
            None,
        );
        // A later fragment (offset 8 × 4 bytes, MF clear) whose payload happens to be a whole
        // IPv4 packet for one of our services: still a fragment, never decapsulated.
        let later = outer_edit(&tunnelled, |h| {
            h[6] = 0x00;
            h[7] = 4;
        });
        t.decap_case(
            "outer non-first fragment",
            &later,
            XDP_PASS,
            Reason::PassFragment,
            None,
        );
        // DF alone is no fragment: decapsulated as usual.
        let df = outer_edit(&tunnelled, |h| h[6] = 0x40);
        t.decap_case("outer DF", &df, XDP_PASS, Reason::DecapIpip, Some(&player));
        // A fragment from a source that is not our POP is still refused first.
        let stranger = outer_edit(&ipip(&player, [198, 51, 100, 99], ME), |h| h[6] = 0x20);
        t.decap_case(
            "fragment from unknown pop",
            &stranger,
            XDP_DROP,
            Reason::DropUnknownPop,
            None,
        );

        // The outer length claims more than the frame holds.
        let long = outer_edit(&tunnelled, |h| set_tot_len(h, whole + 1));
        t.decap_case(
            "outer length beyond frame",
            &long,
            XDP_DROP,
            Reason::DropMalformed,
            None,
        );
        // The outer length leaves no room for an inner IPv4 header, or not even for its own.
        for len in [20 + 19, 16] {
            let short = outer_edit(&tunnelled, |h| set_tot_len(h, len));
            t.decap_case(
                &format!("outer length {len}, below outer + inner header"),
                &short,
                XDP_DROP,
                Reason::DropMalformed,
                None,
            );
        }
        // The inner length claims more than the outer packet carries.
        let mut inner_long = tunnelled.clone();
        let inner_len = whole - 20;
        set_tot_len(&mut inner_long[34..54], inner_len + 1);
        fix_ip4_checksum(&mut inner_long, 34);
        t.decap_case(
            "inner length beyond outer",
            &inner_long,
            XDP_DROP,
            Reason::DropMalformed,
            None,
        );
        // An inner header length below 20 bytes.
        let mut inner_ihl = tunnelled.clone();
        inner_ihl[34] = 0x44;
        fix_ip4_checksum(&mut inner_ihl, 34);
        t.decap_case(
            "inner ihl below 20",
            &inner_ihl,
            XDP_DROP,
            Reason::DropMalformed,
            None,
        );
        // Ethernet padding after the outer packet (frame longer than the outer length) is fine:
        // decapsulated, the padding travels along as it would have.
        let mut padded = tunnelled.clone();
        padded.extend_from_slice(&[0; 6]);
        let mut want = player.clone();
        want.extend_from_slice(&[0; 6]);
        t.decap_case(
            "padded frame",
            &padded,
            XDP_PASS,
            Reason::DecapIpip,
            Some(&want),
        );
    });
}

/// Tunnel mode: an outer fragment is left to the kernel like any fragment, and no flow is
/// remembered from it.
#[test]
fn tunnel_mode_passes_outer_fragments_without_remembering_a_flow() {
    with_backend_net(tunnel_network(), |t| {
        let player = udp4(PLAYER, 40000, VIP, 27015, b"player tick");
        let frag = outer_edit(&ipip(&player, POP, ME), |h| h[6] = 0x20);
        t.decap_case(
            "tunnel outer fragment",
            &frag,
            XDP_PASS,
            Reason::PassFragment,
            None,
        );
        // No flow: the server's reply through the tunnel is not rewritten.
        let from_tunnel = udp4([10, 99, 0, 2], 27015, PLAYER, 40000, b"server tick");
        t.dsr_case(
            "reply to a fragment-only flow",
            &tunnelled_reply(&from_tunnel),
            TC_ACT_OK,
            Reason::PassNotOurs,
            None,
        );
    });
}

/// Literal frames, as Katran's fixtures: what `decap` and `dsr` emit, written out field by
/// field (checksums computed by hand, confirmed by etherparse on every run), not computed by a
/// helper that shares the programs' assumptions.
#[test]
fn literal_frames_per_path() {
    with_backend(|t| {
        let tunnelled = hex("
            02 00 00 00 0a 00  02 00 00 00 00 99  08 00             # to a0
            45 00 00 34  00 00 40 00  3f 04 4f 7c                   # outer: 52 bytes, DF, IPIP
            c6 33 64 01  c0 00 02 15                                # 198.51.100.1 → 192.0.2.21
            45 00 00 20  00 00 40 00  40 11 99 80                   # the player's packet
            64 40 01 02  cb 00 71 0a                                # 100.64.1.2 → 203.0.113.10
            9c 40 69 87  00 0c 80 ec  74 69 63 6b                   # 40000 → 27015, \"tick\"
        ");
        let decapsulated = hex("
            02 00 00 00 0a 00  02 00 00 00 00 99  08 00             # the same Ethernet header
            45 00 00 20  00 00 40 00  40 11 99 80
            64 40 01 02  cb 00 71 0a
            9c 40 69 87  00 0c 80 ec  74 69 63 6b
        ");
        t.decap_case(
            "decap",
            &tunnelled,
            XDP_PASS,
            Reason::DecapIpip,
            Some(&decapsulated),
        );

        let reply = hex("
            02 00 00 00 0a 00  02 00 00 00 00 99  08 00             # as the stack addressed it
            45 00 00 20  00 00 40 00  40 11 99 80
            cb 00 71 0a  64 40 01 02                                # 203.0.113.10 → 100.64.1.2
            69 87 9c 40  00 0c 80 e6  74 6f 63 6b                   # 27015 → 40000, \"tock\"
        ");
        let to_gateway = hex("
            02 00 00 00 00 01  02 00 00 00 0a 00  08 00             # to the gateway, from a0
            45 00 00 20  00 00 40 00  40 11 99 80                   # the rest untouched
            cb 00 71 0a  64 40 01 02
            69 87 9c 40  00 0c 80 e6  74 6f 63 6b
        ");
        t.dsr_case(
            "dsr",
            &reply,
            TC_ACT_OK,
            Reason::DsrRewrite,
            Some(&to_gateway),
        );
        for f in [&tunnelled, &decapsulated, &reply, &to_gateway] {
            etherparse_checksums(f, 14);
        }
    });
    with_backend_net(tunnel_network(), |t| {
        let player = udp4(PLAYER, 40000, VIP, 27015, b"tick");
        t.decap_case(
            "tunnel in",
            &ipip(&player, POP, ME),
            XDP_PASS,
            Reason::PassTunnel,
            None,
        );
        // The game server's reply through the kernel tunnel, from the tunnel's address.
        let tunnelled_reply = hex("
            02 00 00 00 0a 00  02 00 00 00 00 99  08 00
            45 00 00 34  00 00 40 00  3f 04 4f 7c                   # outer: 192.0.2.21 → POP
            c0 00 02 15  c6 33 64 01
            45 00 00 20  00 00 40 00  40 11 cb 26                   # inner from 10.99.0.2
            0a 63 00 02  64 40 01 02
            69 87 9c 40  00 0c b2 8c  74 6f 63 6b
        ");
        // Outer header gone, source the VIP, IPv4 and UDP checksums updated: the packet the
        // server would have sent from the VIP (the same bytes as `dsr`'s direct reply above).
        let to_player = hex("
            02 00 00 00 00 01  02 00 00 00 0a 00  08 00
            45 00 00 20  00 00 40 00  40 11 99 80                   # checksum cb26 → 9980
            cb 00 71 0a  64 40 01 02                                # 203.0.113.10 → 100.64.1.2
            69 87 9c 40  00 0c 80 e6  74 6f 63 6b                   # UDP checksum b28c → 80e6
        ");
        t.dsr_case(
            "dsr tunnel",
            &tunnelled_reply,
            TC_ACT_OK,
            Reason::DsrTunnel,
            Some(&to_player),
        );
        for f in [&tunnelled_reply, &to_player] {
            etherparse_checksums(f, 14);
        }
    });
}
