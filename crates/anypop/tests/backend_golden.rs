//! Golden packets for the backend's programs, run by BPF_PROG_TEST_RUN on the real objects:
//! `decap` (XDP) and `dsr` (TC egress, with an `__sk_buff` context). Every reason, exact output
//! bytes, counters.
mod common;

use std::path::PathBuf;

use anypop::{
    config,
    dataplane::{
        backend::BackendPlane,
        testrun::{XDP_DROP, XDP_PASS, run_tc, run_xdp},
    },
    telemetry::Snapshot,
};
use anypop_common::verdict::Reason;
use common::*;
use etherparse::{IpNumber, Ipv4Header};

const NETWORK: &str = r#"
[[service]]
name = "game"
vip = "203.0.113.10"
protocol = "udp"
ports = "27015"
backends = ["be-1"]

[[service]]
name = "web"
vip = "203.0.113.10"
protocol = "tcp"
ports = "443"
backends = ["be-1"]

[[service]]
name = "elsewhere"
vip = "203.0.113.10"
protocol = "udp"
ports = "27016"
backends = ["be-2"]

[[node]]
name = "pop-1"
role = "pop"
interfaces = ["eth0"]
tunnel_source = "198.51.100.1"

[[node]]
name = "be-1"
role = "backend"
interface = "a0"
address = "192.0.2.21"

[[node]]
name = "be-2"
role = "backend"
interface = "eth0"
address = "192.0.2.22"
"#;

const VIP: [u8; 4] = [203, 0, 113, 10];
const PLAYER: [u8; 4] = [100, 64, 1, 2];
const POP: [u8; 4] = [198, 51, 100, 1];
const ME: [u8; 4] = [192, 0, 2, 21];
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const TC_ACT_OK: i32 = 0;

struct TestBackend {
    plane: Option<BackendPlane>,
    pins: PathBuf,
    a0: u32,
    a0_mac: [u8; 6],
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.plane.take();
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

impl TestBackend {
    fn plane(&mut self) -> &mut BackendPlane {
        self.plane.as_mut().unwrap()
    }

    fn snapshot(&mut self) -> Snapshot {
        self.plane().snapshot().unwrap()
    }

    /// One XDP case: action, counter, output.
    fn decap_case(
        &mut self,
        what: &str,
        frame: &[u8],
        action: u32,
        reason: Reason,
        out: Option<&[u8]>,
    ) {
        let before = self.snapshot();
        let a0 = self.a0;
        let r = run_xdp(self.plane().decap(), frame, Some(a0), 1).unwrap();
        let after = self.snapshot();
        assert_eq!(r.action, action, "{what}: action");
        assert_eq!(
            delta(&before, &after),
            vec![(reason, 1)],
            "{what}: counters"
        );
        assert_eq!(r.output, out.unwrap_or(frame), "{what}: output");
    }

    fn dsr_case(
        &mut self,
        what: &str,
        frame: &[u8],
        action: i32,
        reason: Reason,
        out: Option<&[u8]>,
    ) {
        let before = self.snapshot();
        let a0 = self.a0;
        let r = run_tc(self.plane().dsr(), frame, a0).unwrap();
        let after = self.snapshot();
        assert_eq!(r.action, action, "{what}: action");
        assert_eq!(
            delta(&before, &after),
            vec![(reason, 1)],
            "{what}: counters"
        );
        assert_eq!(r.output, out.unwrap_or(frame), "{what}: output");
    }
}

/// `frame` as `dsr` sends it: addressed to `dst` (the next hop) from `src` (our interface).
fn with_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut v = frame.to_vec();
    v[..6].copy_from_slice(&dst);
    v[6..12].copy_from_slice(&src);
    v
}

/// The gateway's (192.0.2.1's) MAC, as a permanent neighbour entry on a0.
fn set_gateway_mac(mac: &str) {
    sh(&[
        "ip",
        "neigh",
        "replace",
        "192.0.2.1",
        "lladdr",
        mac,
        "dev",
        "a0",
        "nud",
        "permanent",
    ]);
}

/// A private namespace where the backend's a0 has 192.0.2.21/24 and players are reached through
/// the gateway 192.0.2.1 (MAC 02:00:00:00:00:01).
fn with_backend(f: impl FnOnce(&mut TestBackend) + Send + 'static) {
    with_backend_net(NETWORK.to_string(), f)
}

fn with_backend_net(network: String, f: impl FnOnce(&mut TestBackend) + Send + 'static) {
    std::thread::spawn(move || {
        require_root();
        private_netns();
        sh(&["ip", "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "link",
            "add",
            "a0",
            "address",
            "02:00:00:00:0a:00",
            "type",
            "veth",
            "peer",
            "name",
            "a1",
        ]);
        sh(&["ip", "link", "set", "a0", "up"]);
        sh(&["ip", "link", "set", "a1", "up"]);
        sh(&["ip", "addr", "add", "192.0.2.21/24", "dev", "a0"]);
        sh(&["ip", "addr", "add", "203.0.113.10/32", "dev", "lo"]);
        sh(&["ip", "route", "add", "100.64.0.0/10", "via", "192.0.2.1"]);
        set_gateway_mac("02:00:00:00:00:01");
        // bpf_fib_lookup answers only for interfaces with forwarding on (also in output mode).
        sh(&["sysctl", "-q", "-w", "net.ipv4.conf.all.forwarding=1"]);
        sh(&["sysctl", "-q", "-w", "net.ipv4.conf.a0.forwarding=1"]);
        let pins = PathBuf::from(
            format!(
                "/sys/fs/bpf/anypop-betest-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            )
            .replace(['(', ')'], ""),
        );
        let net = config::parse(&network, "test.toml", std::path::Path::new(".")).unwrap();
        let tables = config::compile::compile_backend(&net, "be-1").unwrap();
        let mut plane = BackendPlane::load(&pins).unwrap();
        plane.apply(&tables).unwrap();
        let mut t = TestBackend {
            plane: Some(plane),
            pins,
            a0: anypop::daemon::ifindex("a0", "test").unwrap(),
            a0_mac: anypop::daemon::mac_of("a0").unwrap(),
        };
        f(&mut t);
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// Wraps the IP packet of `inner` (an Ethernet frame) in IPIP from `src` to `dst`.
fn ipip(inner: &[u8], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let ip = &inner[14..];
    let mut outer = Ipv4Header::new(ip.len() as u16, 63, IpNumber::IPV4, src, dst).unwrap();
    outer.header_checksum = outer.calc_header_checksum();
    let mut v = inner[..14].to_vec();
    outer.write(&mut v).unwrap();
    v.extend_from_slice(ip);
    v
}

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

/// The same network with be-1 in tunnel-compatible mode (a kernel IPIP tunnel decapsulates).
fn tunnel_network() -> String {
    NETWORK.replace(
        "address = \"192.0.2.21\"",
        "address = \"192.0.2.21\"\nmode = \"tunnel\"",
    )
}

/// The reply as the kernel tunnel emits it: outer IPv4 (backend → POP, protocol 4) around the
/// game server's packet, whose source is the tunnel's own address.
fn tunnelled_reply(inner: &[u8]) -> Vec<u8> {
    ipip(inner, ME, POP)
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
