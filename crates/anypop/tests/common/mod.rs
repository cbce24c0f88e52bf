//! Shared by the kernel-backed tests: a private network namespace per test thread, the real edge
//! program loaded with pins in a unique directory that is removed afterwards, and the frame
//! builders only tests need (the usual UDP frame, IPIP and the checksum are `anypop::lab::frames`).
#![allow(dead_code)]

pub mod backend;
pub mod fixtures;
pub mod netns;

pub use fixtures::*;
pub use netns::*;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use anypop::{
    compile, config,
    dataplane::{
        edge::{Edge, EdgeSizes},
        testrun::{XdpRun, run_xdp},
    },
    telemetry::Snapshot,
};
use anypop_common::verdict::Reason;
use etherparse::{Ethernet2Header, IpNumber, Ipv4Header, PacketBuilder, PacketBuilderStep};

#[allow(unused_imports)]
pub use anypop::lab::frames::{A0_MAC, PLAYER_MAC, checksum, fix_ip4_checksum, udp4, udp4_frame};

/// Kernel tests need root; say so instead of failing obscurely.
pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests load eBPF programs: run them as root (the README's test command does)"
    );
}

/// Our test interfaces: `a0` (tunnel source side, backends reachable by XDP_TX) and `b0` (a second
/// interface, backends reachable by XDP_REDIRECT). Only in the private namespace.
pub struct Lab {
    pub a0: u32,
    pub b0: u32,
    pub a0_mac: [u8; 6],
    pub b0_mac: [u8; 6],
}

/// The addresses of the lab's networks (`fixtures/*.toml`): the VIP (and the golden network's
/// drained one), pop-1's tunnel source, be-1 and be-2, a player and an attacker.
pub const VIP: [u8; 4] = [203, 0, 113, 10];
pub const VIP_DRAINED: [u8; 4] = [203, 0, 113, 11];
pub const TUNNEL: [u8; 4] = [198, 51, 100, 1];
pub const BE1: [u8; 4] = [198, 51, 100, 21];
pub const BE2: [u8; 4] = [192, 0, 2, 22];
pub const PLAYER: [u8; 4] = [100, 64, 1, 2];
pub const ATTACKER: [u8; 4] = [198, 18, 7, 7];
pub const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
pub const PLAYER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
];
pub const ATTACKER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0x0b, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x66,
];

pub const BE1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x21];
pub const BE2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];

/// Moves the calling thread into a new namespace with the lab: the veth pairs a0/a1 (a0
/// 198.51.100.1/24, be-1 198.51.100.21 as its neighbour) and b0/b1 (b0 192.0.2.1/24, be-2
/// 192.0.2.22 as its neighbour), forwarding on.
pub fn build_lab() -> Lab {
    NetSetup::enter_private()
        .lo_up()
        .veth_mac("a0", "02:00:00:00:0a:00", "a1")
        .veth_mac("b0", "02:00:00:00:0b:00", "b1")
        .addr("198.51.100.1/24", "a0")
        .addr("192.0.2.1/24", "b0")
        .neigh("198.51.100.21", "02:00:00:00:00:21", "a0")
        .neigh("192.0.2.22", "02:00:00:00:00:22", "b0")
        .forwarding(&["all", "a0", "b0"])
        .apply()
        .unwrap();
    let idx = |n: &str| anypop::sys::iface::ifindex(n, "test").unwrap();
    Lab {
        a0: idx("a0"),
        b0: idx("b0"),
        a0_mac: anypop::sys::iface::mac_of("a0").unwrap(),
        b0_mac: anypop::sys::iface::mac_of("b0").unwrap(),
    }
}

/// Runs `f` on a thread of its own, in the lab ([`build_lab`]) that dies with the thread.
pub fn in_lab<T: Send + 'static>(f: impl FnOnce(&Lab) -> T + Send + 'static) -> T {
    in_thread(move || f(&build_lab()))
}

/// Runs `f` in the lab ([`in_lab`]) on an edge loaded with `network`.
pub fn with_edge_net(network: String, f: impl FnOnce(&mut TestEdge, &Lab) + Send + 'static) {
    in_lab(move |lab| {
        let mut t = TestEdge::new(&network, lab);
        f(&mut t, lab);
    })
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A temporary directory of its own (`anypop-TAG-…`), removed on drop (also when an assertion
/// fails).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("anypop-{}", unique(tag)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` as `name` in the directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// `TAG-PID-NANOS-SEQ`: a name no other test (of this process or another) is using.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{}-{nanos}-{seq}", std::process::id())
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loaded edge program whose pins are removed when it is dropped (also on panic).
pub struct TestEdge {
    pub edge: Option<Edge>,
    pub pin_dir: PathBuf,
    /// The names of the compiled network's rules and services.
    pub names: compile::Names,
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.edge.take();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

impl TestEdge {
    /// Loads the real program with small maps, compiles `network` for node `pop-1` and makes it
    /// live, and registers the lab's interfaces.
    pub fn new(network: &str, lab: &Lab) -> TestEdge {
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/anypop-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        TestEdge::at(pin_dir, network, lab)
    }

    /// As [`TestEdge::new`], with the maps pinned in `pin_dir`.
    pub fn at(pin_dir: PathBuf, network: &str, lab: &Lab) -> TestEdge {
        require_root();
        let _ = std::fs::create_dir_all("/sys/fs/bpf");
        let net = config::parse(network, "test.toml", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut te = TestEdge {
            edge: None,
            pin_dir: pin_dir.clone(),
            names: Default::default(),
        };
        let sizes = EdgeSizes {
            max_services: 8,
            flow_entries: 4096,
            bucket_entries: 4096,
        };
        let mut edge = Edge::load(&pin_dir, sizes).unwrap_or_else(|e| panic!("{e}"));
        let slot = edge.standby_generation().unwrap();
        let tables = compile::compile_edge(&net, "pop-1", slot, edge.sizes.max_services)
            .unwrap_or_else(|e| panic!("{e}"));
        te.names = tables.names.clone();
        edge.apply(&tables).unwrap();
        edge.add_interface(lab.a0, lab.a0_mac, 1500).unwrap();
        edge.add_interface(lab.b0, lab.b0_mac, 1500).unwrap();
        te.edge = Some(edge);
        te
    }

    pub fn edge(&mut self) -> &mut Edge {
        self.edge.as_mut().unwrap()
    }

    /// One frame through the real program, as if it arrived on `ingress`.
    pub fn run(&mut self, frame: &[u8], ingress: u32) -> XdpRun {
        let r = run_xdp(self.edge().program(), frame, Some(ingress), 1).expect("test run");
        assert_ne!(
            r.action,
            anypop::dataplane::testrun::XDP_ABORTED,
            "XDP_ABORTED must never happen (frame {frame:02x?})"
        );
        r
    }

    pub fn snapshot(&mut self) -> Snapshot {
        self.edge().snapshot().unwrap()
    }
}

/// Every reason a golden case (`TestEdge::case`, `TestBackend::decap_case`/`dsr_case`) saw
/// counted, in this test process: what `golden_reasons.rs` checks against `Reason::ALL`.
pub static PRODUCED: std::sync::Mutex<Vec<Reason>> = std::sync::Mutex::new(Vec::new());

/// Records that a golden case produced `reason`.
pub fn produced(reason: Reason) {
    PRODUCED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(reason);
}

impl TestEdge {
    /// Runs `frame` as if it arrived on `ingress` and checks the action and that exactly one
    /// `reason` was counted, with the frame's bytes; returns the output bytes.
    pub fn counted(
        &mut self,
        what: &str,
        frame: &[u8],
        ingress: u32,
        action: u32,
        reason: Reason,
    ) -> Vec<u8> {
        let before = self.snapshot();
        let r = self.run(frame, ingress);
        let after = self.snapshot();
        assert_eq!(r.action, action, "{what}: action");
        assert_one_counted(what, &before, &after, reason);
        let bytes = after.get(reason).bytes - before.get(reason).bytes;
        assert_eq!(bytes, frame.len() as u64, "{what}: counted bytes");
        r.output
    }

    /// One golden case: [`TestEdge::counted`], and the output bytes (`None`: the frame as it
    /// came).
    pub fn case(
        &mut self,
        what: &str,
        frame: &[u8],
        ingress: u32,
        action: u32,
        reason: Reason,
        out: Option<&[u8]>,
    ) {
        let output = self.counted(what, frame, ingress, action, reason);
        assert_eq!(output, out.unwrap_or(frame), "{what}: output bytes");
        produced(reason);
    }
}

impl TestEdge {
    /// The golden case of the usual forward: XDP_TX, counted `fwd_ipip`, and exactly `want`
    /// (usually [`expected_ipip`] or a literal frame) on the wire.
    pub fn forwarded_tx(&mut self, what: &str, frame: &[u8], ingress: u32, want: &[u8]) {
        let xdp_tx = anypop::dataplane::testrun::XDP_TX;
        self.case(what, frame, ingress, xdp_tx, Reason::FwdIpip, Some(want));
    }
}

/// Checks that exactly one packet, counted as `reason`, moved the counters between two
/// snapshots.
pub fn assert_one_counted(what: &str, before: &Snapshot, after: &Snapshot, reason: Reason) {
    assert_eq!(delta(before, after), vec![(reason, 1)], "{what}: counters");
}

/// Counter deltas by reason between two snapshots (packets only), non-zero ones.
pub fn delta(a: &Snapshot, b: &Snapshot) -> Vec<(Reason, u64)> {
    Reason::ALL
        .iter()
        .map(|&r| (r, b.get(r).packets - a.get(r).packets))
        .filter(|(_, d)| *d > 0)
        .collect()
}

/// The start of every frame the tests build (with etherparse): Ethernet from the player to a0.
pub fn from_player() -> PacketBuilderStep<Ethernet2Header> {
    PacketBuilder::ethernet2(PLAYER_MAC, A0_MAC)
}

/// A UDP frame from the player with a TTL (from port 40000, payload `ttl`).
pub fn udp4_ttl(src: [u8; 4], dst: [u8; 4], dport: u16, ttl: u8) -> Vec<u8> {
    udp4_frame(PLAYER_MAC, A0_MAC, src, 40000, dst, dport, ttl, b"ttl")
}

/// TCP with the given flags (SYN / ACK) from `src:sport` to `dst:dport`.
pub fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, syn: bool, ack: bool) -> Vec<u8> {
    let mut b = from_player()
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(1);
    }
    let mut v = Vec::new();
    b.write(&mut v, &[]).unwrap();
    v
}

/// ICMP echo request.
pub fn icmp4_echo(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let b = from_player().ipv4(src, dst, 64).icmpv4_echo_request(1, 1);
    let mut v = Vec::new();
    b.write(&mut v, b"ping").unwrap();
    v
}

/// UDP over IPv6.
pub fn udp6(src: [u8; 16], dst: [u8; 16], dport: u16) -> Vec<u8> {
    let b = from_player().ipv6(src, dst, 64).udp(40000, dport);
    let mut v = Vec::new();
    b.write(&mut v, b"hello6").unwrap();
    v
}

/// A frame that is not IP: broadcast from the player with the ARP ethertype and 28 zero bytes.
pub fn arp_frame() -> Vec<u8> {
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&PLAYER_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    arp
}

/// Inserts 802.1Q tags (outermost first) after the MAC addresses.
pub fn with_vlans(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    for (tpid, vid) in tags {
        v.extend_from_slice(&tpid.to_be_bytes());
        v.extend_from_slice(&vid.to_be_bytes());
    }
    v.extend_from_slice(&frame[12..]);
    v
}

/// Rewrites the IPv4 fragment field (flags + offset in 8-byte units) and fixes the checksum.
pub fn set_frag4(frame: &[u8], more: bool, offset8: u16) -> Vec<u8> {
    let mut v = frame.to_vec();
    let f = ((more as u16) << 13) | (offset8 & 0x1fff);
    v[14 + 6..14 + 8].copy_from_slice(&f.to_be_bytes());
    fix_ip4_checksum(&mut v, 14);
    v
}

/// Sets DF in an IPv4 frame and fixes the checksum.
pub fn set_df(frame: &[u8]) -> Vec<u8> {
    let mut v = frame.to_vec();
    v[14 + 6] |= 0x40;
    fix_ip4_checksum(&mut v, 14);
    v
}

/// IPv6 UDP frame with extension headers inserted before UDP: each `(next_header_code)` of
/// hop-by-hop (0), destination options (60), routing (43) as 8-byte headers, or fragment (44).
pub fn udp6_with_ext(src: [u8; 16], dst: [u8; 16], dport: u16, exts: &[u8]) -> Vec<u8> {
    let plain = udp6(src, dst, dport);
    let l3 = 14;
    let udp = plain[l3 + 40..].to_vec();
    let mut ext_bytes = Vec::new();
    for (i, &code) in exts.iter().enumerate() {
        let next = exts.get(i + 1).copied().unwrap_or(17);
        if code == 44 {
            ext_bytes.extend_from_slice(&[next, 0, 0, 8, 0, 0, 0, 1]); // offset 1, id 1
        } else {
            ext_bytes.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]); // PadN-filled
        }
    }
    let mut v = plain[..l3 + 40].to_vec();
    v[l3 + 6] = *exts.first().unwrap_or(&17);
    let plen = (ext_bytes.len() + udp.len()) as u16;
    v[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
    v.extend_from_slice(&ext_bytes);
    v.extend_from_slice(&udp);
    v
}

/// What the edge must emit for a forwarded IPv4 packet: a fresh Ethernet header to the next
/// hop, an outer IPv4 header (tunnel source → backend, protocol 4, TTL 64, DF and TOS copied
/// from the inner one, valid checksum), then the inner IP packet byte for byte.
pub fn expected_ipip(
    frame: &[u8],
    l3: usize,
    dmac: [u8; 6],
    smac: [u8; 6],
    tunnel_src: [u8; 4],
    backend: [u8; 4],
) -> Vec<u8> {
    let inner_len = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) as usize;
    let inner = &frame[l3..l3 + inner_len];
    let df = inner[6] & 0x40 != 0;
    let mut outer =
        Ipv4Header::new((inner_len) as u16, 64, IpNumber::IPV4, tunnel_src, backend).unwrap();
    outer.dont_fragment = df;
    outer.identification = 0;
    outer.dscp = etherparse::Ipv4Dscp::try_new(inner[1] >> 2).unwrap();
    outer.ecn = etherparse::Ipv4Ecn::try_new(inner[1] & 3).unwrap();
    outer.header_checksum = outer.calc_header_checksum();
    let mut v = Vec::new();
    v.extend_from_slice(&dmac);
    v.extend_from_slice(&smac);
    v.extend_from_slice(&[0x08, 0x00]);
    outer.write(&mut v).unwrap();
    v.extend_from_slice(inner);
    // Frame padding after the inner packet (short Ethernet frames) travels along unchanged.
    v.extend_from_slice(&frame[l3 + inner_len..]);
    v
}

/// What the POP sends back for a DF packet too big to tunnel: ICMP "fragmentation needed" from
/// the VIP to the player, out the way it came (MACs swapped, VLAN tags kept), quoting the
/// packet's IPv4 header and its first 8 bytes.
pub fn expected_frag_needed(frame: &[u8], l2: usize, next_hop_mtu: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&frame[6..12]);
    v.extend_from_slice(&frame[0..6]);
    v.extend_from_slice(&frame[12..l2]);
    let mut ip = vec![0x45, 0xc0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0];
    ip.extend_from_slice(&frame[l2 + 16..l2 + 20]);
    ip.extend_from_slice(&frame[l2 + 12..l2 + 16]);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mtu = next_hop_mtu.to_be_bytes();
    let mut icmp = vec![3, 4, 0, 0, 0, 0, mtu[0], mtu[1]];
    icmp.extend_from_slice(&frame[l2..l2 + 28]);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    v.extend(ip);
    v.extend(icmp);
    v
}

impl TestEdge {
    /// Compiles `network` into the standby slot and switches to it (what a live apply does).
    pub fn apply(&mut self, network: &str) -> anypop::dataplane::edge::Applied {
        let net = config::parse(network, "test.toml", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        let edge = self.edge();
        let slot = edge.standby_generation().unwrap();
        let tables = compile::compile_edge(&net, "pop-1", slot, edge.sizes.max_services)
            .unwrap_or_else(|e| panic!("{e}"));
        edge.apply(&tables).unwrap()
    }
}

/// The outer destination (the backend) of a forwarded frame.
pub fn outer_dst(out: &[u8]) -> [u8; 4] {
    [out[30], out[31], out[32], out[33]]
}

/// Runs `f` and says how long it took, for token-bucket checks with explicit time bounds.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, std::time::Duration) {
    let start = std::time::Instant::now();
    let r = f();
    (r, start.elapsed())
}

/// The most packets a bucket of `burst` packets refilled at `pps` can admit from a run of
/// packets that took `elapsed` (measured around the whole run): the burst, plus one packet per
/// `1/pps` that passed. A test that checks "the burst, then denied" holds exactly when the run
/// was faster than one packet's cost (1 s at 1 pps), and stays true, with this bound, when a
/// stall on a loaded machine made it slower.
pub fn max_admitted(burst: usize, pps: u64, elapsed: std::time::Duration) -> usize {
    burst + (elapsed.as_nanos() * pps as u128 / 1_000_000_000) as usize
}

impl TestEdge {
    /// Forgets every CPU's cached next hops (`FIB_CACHE`), so the next packet to each backend
    /// asks the FIB: no waiting for the cache's lifetime.
    pub fn forget_next_hops(&mut self) {
        use anypop_common::layout::FibCacheEntry;
        use aya::maps::{MapData, PerCpuArray, PerCpuValues};
        let data = MapData::from_pin(self.pin_dir.join("FIB_CACHE")).unwrap();
        let mut m: PerCpuArray<_, FibCacheEntry> =
            PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).unwrap();
        let cpus = aya::util::nr_cpus().unwrap();
        for i in 0..m.len() {
            let zero = PerCpuValues::try_from(vec![FibCacheEntry::default(); cpus]).unwrap();
            m.set(i, zero, 0).unwrap();
        }
    }
}

/// Bytes from hex text: two hex digits per byte, separated by whitespace; `#` starts a comment
/// that runs to the end of the line. For literal frames a reader can check field by field.
pub fn hex(text: &str) -> Vec<u8> {
    text.lines()
        .map(|l| l.split('#').next().unwrap())
        .flat_map(|l| l.split_whitespace())
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("not a hex byte: {b:?}")))
        .collect()
}

/// Checks a literal IPv4 frame's checksums with etherparse, independently of the program and of
/// [`checksum`]: the IPv4 header's, then, inside IPIP, the inner header's, and the innermost UDP
/// or ICMP checksum over its payload. Returns the IPv4 headers, outermost first.
pub fn etherparse_checksums(frame: &[u8], l3: usize) -> Vec<Ipv4Header> {
    let mut headers = Vec::new();
    let mut ip = &frame[l3..];
    loop {
        let h = etherparse::Ipv4HeaderSlice::from_slice(ip).expect("an IPv4 header");
        let header = h.to_header();
        assert_eq!(
            header.header_checksum,
            header.calc_header_checksum(),
            "IPv4 header checksum of {header:?}"
        );
        let payload = &ip[h.slice().len()..header.total_len as usize];
        headers.push(header.clone());
        match header.protocol {
            IpNumber::IPV4 => ip = payload,
            IpNumber::UDP => {
                let udp = etherparse::UdpHeaderSlice::from_slice(payload).unwrap();
                if udp.checksum() != 0 {
                    let want = udp
                        .to_header()
                        .calc_checksum_ipv4(&header, &payload[8..])
                        .unwrap();
                    assert_eq!(udp.checksum(), want, "UDP checksum");
                }
                return headers;
            }
            IpNumber::ICMP => {
                let icmp = etherparse::Icmpv4Slice::from_slice(payload).unwrap();
                let want = icmp.icmp_type().calc_checksum(icmp.payload());
                assert_eq!(icmp.checksum(), want, "ICMP checksum");
                return headers;
            }
            p => panic!("unexpected protocol {p:?}"),
        }
    }
}
