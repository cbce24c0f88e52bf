//! The backend's programs, sharing one set of maps:
//! - `decap` (XDP on the backend's interface): IPIP from a known POP, to our address, for a
//!   configured service → outer header removed, passed to the stack, where the game server has
//!   the VIP bound. Anything else passes untouched; IPIP from an unknown source is dropped.
//!   Outer fragments are passed whole to the kernel (never decapsulated), and outer or inner
//!   lengths that disagree with the frame are dropped as malformed.
//! - `dsr` (TC egress): a reply whose source is a VIP and whose source port belongs to that
//!   service goes straight to the player, with the next hop from `bpf_fib_lookup`.
#![no_std]
#![no_main]

use anypop_common::{layout::*, verdict::Reason};
use anypop_ebpf::{
    counters,
    parse::{AF_INET, ETH_P_IP, IPPROTO_IPIP, data, data_end, ethernet, w, w32, words_at},
};
use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup, xdp_action,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_jiffies64, bpf_redirect, bpf_xdp_adjust_head},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};

anypop_ebpf::license!();

#[map]
static B_SETTINGS: Array<BackendSettings> = Array::pinned(1, 0);
/// POP tunnel sources allowed to send us IPIP.
#[map]
static B_POPS: HashMap<u32, u32> = HashMap::pinned(4096, 0);
/// Services this backend serves (VIP, port, protocol; generation 0).
#[map]
static B_SERVICES: HashMap<ServiceKey4, u32> = HashMap::pinned(131_072, 0);
/// Players' flows seen on the way in (tunnel mode): the VIP each one addressed.
#[map]
static B_FLOWS: LruHashMap<ReplyKey, u32> = LruHashMap::pinned(262_144, 0);
#[map]
static B_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::pinned(anypop_common::verdict::REASON_SLOTS, 0);

/// The next hop of recent replies, per CPU, by player address (direct-mapped): what
/// `bpf_fib_lookup` said, so a game server's stream of replies to a player costs one inlined
/// array read instead of a FIB lookup per packet. Not pinned: a cache, rebuilt by a new program.
#[map]
static B_HOP_CACHE: PerCpuArray<ReplyHop> = PerCpuArray::with_max_entries(HOP_CACHE_SLOTS, 0);

const HOP_CACHE_SLOTS: u32 = 4096;
/// How long a cached next hop is trusted (jiffies: 1 s at HZ=250), as the edge's FIB cache.
const HOP_CACHE_JIFFIES: u64 = 250;

/// One cached answer of `bpf_fib_lookup` for replies from `src` to `dst` leaving `ifindex`.
#[repr(C)]
#[derive(Clone, Copy)]
struct ReplyHop {
    dst: u32,
    src: u32,
    ifindex: u32,
    egress: u32,
    /// The route's MTU: a larger packet takes the full lookup, which reports it (as before).
    mtu: u32,
    _pad: u32,
    expires_jiffies: u64,
    /// Destination MAC, then source MAC: the frame's first 12 bytes.
    macs: [u8; 12],
    _pad2: [u8; 4],
}

const FIB_OUTPUT: u32 = aya_ebpf::bindings::BPF_FIB_LOOKUP_OUTPUT;

#[inline(always)]
fn count(reason: Reason, bytes: u64) {
    counters::add(&B_COUNTERS, reason as u32, bytes);
}

#[xdp]
pub fn decap(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (action, reason) = try_decap(&ctx);
    count(reason, len);
    action
}

#[inline(always)]
fn try_decap(ctx: &XdpContext) -> (u32, Reason) {
    let pass = (xdp_action::XDP_PASS, Reason::PassNotOurs);
    let settings = match B_SETTINGS.get(0) {
        Some(s) => *s,
        None => return pass,
    };
    let l3 = match ethernet(ctx) {
        Some((l3, ETH_P_IP)) => l3,
        _ => return pass,
    };
    let outer = match words_at(ctx, l3, 10) {
        Some(p) => p,
        None => return pass,
    };
    let w0 = u16::from_be(w(outer, 0));
    let proto = u16::from_be(w(outer, 4)) as u8;
    if w0 >> 12 != 4 || proto != IPPROTO_IPIP || w32(outer, 8) != settings.address {
        return pass;
    }
    let malformed = (xdp_action::XDP_DROP, Reason::DropMalformed);
    let ihl = (((w0 >> 8) & 0xf) as usize) * 4;
    // The outer packet must fit the frame (what follows it is Ethernet padding).
    let tot_len = u16::from_be(w(outer, 1)) as usize;
    if ihl < 20 || l3 + tot_len > data_end(ctx) - data(ctx) {
        return malformed;
    }
    // No open relay: only our POPs may tunnel to us.
    if B_POPS.get_ptr(&w32(outer, 6)).is_none() {
        return (xdp_action::XDP_DROP, Reason::DropUnknownPop);
    }
    // An outer fragment (MF or an offset) holds part of the inner packet, or bytes that only
    // look like one: never decapsulated. The kernel reassembles it (and its tunnel, if any,
    // takes the whole packet).
    if u16::from_be(w(outer, 3)) & 0x3fff != 0 {
        return (xdp_action::XDP_PASS, Reason::PassFragment);
    }
    if tot_len < ihl + 20 {
        return malformed;
    }
    let inner_off = l3 + ihl;
    let inner = match words_at(ctx, inner_off, 10) {
        Some(p) => p,
        None => return malformed,
    };
    let i0 = u16::from_be(w(inner, 0));
    if i0 >> 12 != 4 {
        return pass;
    }
    let inner_ihl = (((i0 >> 8) & 0xf) as usize) * 4;
    // The inner packet must fit the outer one (the kernel would trim a shorter one).
    let inner_len = u16::from_be(w(inner, 1)) as usize;
    if inner_ihl < 20 || inner_len < inner_ihl || inner_len > tot_len - ihl {
        return malformed;
    }
    let inner_proto = u16::from_be(w(inner, 4)) as u8;
    let (player_port, port) = if inner_proto == PROTO_UDP || inner_proto == PROTO_TCP {
        match words_at(ctx, inner_off + inner_ihl, 2) {
            Some(p) => (u16::from_be(w(p, 0)), u16::from_be(w(p, 1))),
            None => return malformed,
        }
    } else {
        (0, 0)
    };
    let key = ServiceKey4 {
        addr: w32(inner, 8),
        port,
        proto: inner_proto,
        generation: 0,
    };
    if B_SERVICES.get_ptr(&key).is_none() {
        return pass;
    }
    if settings.mode == BACKEND_TUNNEL {
        // The kernel's tunnel decapsulates; remember which VIP this player addressed, so the
        // reply that comes back through the tunnel can be given it (and nothing else).
        let flow = ReplyKey {
            player: w32(inner, 6),
            player_port,
            service_port: port,
            proto: inner_proto,
            _pad: [0; 3],
        };
        if B_FLOWS.get_ptr(&flow).is_none() {
            let _ = B_FLOWS.insert(&flow, &key.addr, 0);
        }
        return (xdp_action::XDP_PASS, Reason::PassTunnel);
    }
    // Move the L2 header (with its VLAN tags) forward over the outer IP header, then drop the
    // bytes in front: the frame becomes L2 + inner packet, ethertype unchanged (IPv4).
    if !move_l2(ctx, l3, ihl) {
        return (xdp_action::XDP_DROP, Reason::DropMalformed);
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, ihl as i32) } != 0 {
        return (xdp_action::XDP_DROP, Reason::DropAdjustFailed);
    }
    (xdp_action::XDP_PASS, Reason::DecapIpip)
}

/// Copies the first `l2` bytes (14, 18 or 22) `by` bytes further into the frame. Read into a
/// buffer first (the ranges overlap), with separate bounds checks for source and destination so
/// the verifier can prove both.
#[inline(always)]
fn move_l2(ctx: &XdpContext, l2: usize, by: usize) -> bool {
    if by > 60 || l2 > 22 {
        return false;
    }
    let start = data(ctx);
    if start + 22 > data_end(ctx) {
        return false;
    }
    let src = start as *const u16;
    let mut buf = [0u16; 11];
    let mut i = 0;
    while i < 11 {
        buf[i] = unsafe { core::ptr::read(src.add(i)) };
        i += 1;
    }
    let start = data(ctx);
    if start + by + 22 > data_end(ctx) {
        return false;
    }
    let dst = (start + by) as *mut u16;
    let words = l2 / 2;
    let mut i = 0;
    while i < 11 {
        if i < words {
            unsafe { core::ptr::write(dst.add(i), buf[i]) };
        }
        i += 1;
    }
    true
}

#[classifier]
pub fn dsr(ctx: TcContext) -> i32 {
    let len = unsafe { (*ctx.skb.skb).len } as u64;
    let (action, reason) = try_dsr(&ctx);
    count(reason, len);
    action
}

/// Ethernet + an IPv4 header without options + the L4 ports: what `dsr` reads of every frame.
const REPLY_HEADERS: usize = 14 + 20 + 4;
/// Tunnel mode: Ethernet + outer IPv4 + inner IPv4 (no options) + 8 bytes of L4 (ports and
/// the UDP checksum).
const TUNNEL_HEADERS: usize = 14 + 20 + 20 + 8;

/// The frame's first `len` bytes, read in place from the skb's linear data: no
/// helper call per field (each `bpf_skb_load_bytes` is a call, and `dsr` sees every packet the
/// backend sends, SSH and all). Locally built skbs keep their headers linear; when they are
/// not, they are pulled in once. `None` for a frame too short to be a reply we handle.
/// Only reads: a direct packet write would make the verifier unclone every cloned skb (every
/// TCP segment) before the program runs, so the few rewrites go through `bpf_skb_store_bytes`.
#[inline(always)]
fn linear_headers(ctx: &TcContext, len: usize) -> Option<*const u16> {
    let (start, end) = skb_data(ctx);
    if start + len <= end {
        return Some(start as *const u16);
    }
    if ctx.len() < len as u32 || ctx.pull_data(len as u32).is_err() {
        return None;
    }
    let (start, end) = skb_data(ctx);
    if start + len <= end {
        Some(start as *const u16)
    } else {
        None
    }
}

/// Start and end of the skb's linear data, read with volatile loads (see `anypop_ebpf::parse::data`: otherwise
/// LLVM may hand the verifier plain numbers instead of packet pointers).
#[inline(always)]
fn skb_data(ctx: &TcContext) -> (usize, usize) {
    unsafe {
        let skb = ctx.skb.skb;
        (
            core::ptr::read_volatile(&(*skb).data) as usize,
            core::ptr::read_volatile(&(*skb).data_end) as usize,
        )
    }
}

#[inline(always)]
fn try_dsr(ctx: &TcContext) -> (i32, Reason) {
    let pass = (TC_ACT_OK, Reason::PassNotOurs);
    let h = match linear_headers(ctx, REPLY_HEADERS) {
        Some(h) => h,
        None => return pass,
    };
    // Words: 0-6 Ethernet, 7-16 the IPv4 header, 17-18 the ports (without IP options).
    if u16::from_be(w(h, 6)) != 0x0800 {
        return pass;
    }
    let w0 = u16::from_be(w(h, 7));
    let ihl = (((w0 >> 8) & 0xf) as usize) * 4;
    let tot_len = u16::from_be(w(h, 8));
    let proto = (u16::from_be(w(h, 11)) & 0xff) as u8;
    let (src, dst) = (w32(h, 13), w32(h, 15));
    if w0 >> 12 != 4 || ihl < 20 || ihl > 60 {
        return pass;
    }
    if proto == IPPROTO_IPIP {
        // An encapsulated reply going back to a POP through a kernel tunnel (tunnel mode).
        if ihl != 20 || B_POPS.get_ptr(&dst).is_none() {
            return pass;
        }
        return tunnel_reply(ctx);
    }
    let sport = if proto == PROTO_UDP || proto == PROTO_TCP {
        if ihl == 20 {
            u16::from_be(w(h, 17))
        } else {
            match ctx.load::<u16>(14 + ihl) {
                Ok(p) => u16::from_be(p),
                Err(_) => return pass,
            }
        }
    } else {
        0
    };
    let key = ServiceKey4 {
        addr: src,
        port: sport,
        proto,
        generation: 0,
    };
    if B_SERVICES.get_ptr(&key).is_none() {
        return pass;
    }
    match next_hop(ctx, src, dst, proto, tot_len) {
        Some(action) => (action, Reason::DsrRewrite),
        None => (TC_ACT_OK, Reason::DsrFibFail),
    }
}

/// Tunnel mode: strips the outer header of a reply headed for a POP, gives the inner packet the
/// VIP the player addressed (only for a flow seen coming in: never an arbitrary rewrite), fixes
/// the IP and UDP/TCP checksums (ICMP has no pseudo-header: untouched) and sends it straight to
/// the player.
#[inline(always)]
fn tunnel_reply(ctx: &TcContext) -> (i32, Reason) {
    let pass = (TC_ACT_OK, Reason::PassNotOurs);
    const INNER: usize = 14 + 20;
    let h = match linear_headers(ctx, TUNNEL_HEADERS) {
        Some(h) => h,
        None => return pass,
    };
    // Words: 17-26 the inner IPv4 header, 27-30 its first 8 L4 bytes. A reply with IP options
    // (no game server sends one) is left to the tunnel: it still reaches the player, via the POP.
    if u16::from_be(w(h, 17)) >> 8 != 0x45 {
        return pass;
    }
    let tot_len = u16::from_be(w(h, 18));
    let proto = (u16::from_be(w(h, 21)) & 0xff) as u8;
    let (old_src, player) = (w32(h, 23), w32(h, 25));
    let l4 = INNER + 20;
    let (sport, dport, udp_zero) = if proto == PROTO_UDP || proto == PROTO_TCP {
        (
            u16::from_be(w(h, 27)),
            u16::from_be(w(h, 28)),
            proto == PROTO_UDP && w(h, 30) == 0,
        )
    } else {
        (0, 0, false)
    };
    let flow = ReplyKey {
        player,
        player_port: dport,
        service_port: sport,
        proto,
        _pad: [0; 3],
    };
    let vip = match B_FLOWS.get_ptr(&flow) {
        Some(v) => unsafe { *v },
        None => return pass,
    };
    // Inner source := VIP, with incremental checksum updates.
    if vip != old_src {
        if ctx
            .l3_csum_replace(INNER + 10, old_src as u64, vip as u64, 4)
            .is_err()
        {
            return pass;
        }
        let csum_off = match proto {
            PROTO_UDP => Some((l4 + 6, BPF_F_MARK_MANGLED_0 as u64)),
            PROTO_TCP => Some((l4 + 16, 0)),
            _ => None,
        };
        if let Some((off, extra)) = csum_off {
            if !udp_zero
                && ctx
                    .l4_csum_replace(
                        off,
                        old_src as u64,
                        vip as u64,
                        BPF_F_PSEUDO_HDR as u64 | extra | 4,
                    )
                    .is_err()
            {
                return pass;
            }
        }
        if ctx.store(INNER + 12, &vip, 0).is_err() {
            return pass;
        }
    }
    // Remove the outer header; the decap flag keeps GSO metadata right for large TCP sends.
    if ctx
        .adjust_room(-20, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4 as u64)
        .is_err()
    {
        return (TC_ACT_OK, Reason::DsrFibFail);
    }
    match next_hop(ctx, vip, player, proto, tot_len) {
        Some(action) => (action, Reason::DsrTunnel),
        None => (TC_ACT_OK, Reason::DsrFibFail),
    }
}

/// Sets the MACs of the FIB's next hop for `src` → `dst` and returns the TC action (redirect
/// when the egress is another interface). A fresh answer in this CPU's [`B_HOP_CACHE`] skips
/// the lookup.
#[inline(always)]
fn next_hop(ctx: &TcContext, src: u32, dst: u32, proto: u8, tot_len: u16) -> Option<i32> {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let now = unsafe { bpf_jiffies64() };
    let slot = dst.wrapping_mul(0x9e37_79b1) >> (32 - 12);
    let cache = B_HOP_CACHE.get_ptr_mut(slot & (HOP_CACHE_SLOTS - 1));
    if let Some(c) = cache {
        let c = unsafe { &*c };
        if c.dst == dst
            && c.src == src
            && c.ifindex == ifindex
            && now < c.expires_jiffies
            && tot_len as u32 <= c.mtu
        {
            let (macs, egress) = (c.macs, c.egress);
            ctx.store(0, &macs, 0).ok()?;
            return Some(tc_action(ifindex, egress));
        }
    }
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = proto;
    fib.__bindgen_anon_1.tot_len = tot_len;
    fib.ifindex = ifindex;
    fib.__bindgen_anon_3.ipv4_src = src;
    fib.__bindgen_anon_4.ipv4_dst = dst;
    let rc = unsafe {
        fib_lookup(
            ctx.skb.skb as *mut _,
            &mut fib as *mut _,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            FIB_OUTPUT,
        )
    };
    if rc != 0 {
        return None;
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&fib.dmac);
    macs[6..].copy_from_slice(&fib.smac);
    if let Some(c) = cache {
        // With `tot_len` given, a successful lookup reports the route's MTU in its place.
        let mtu = unsafe { fib.__bindgen_anon_1.mtu_result } as u32;
        unsafe {
            *c = ReplyHop {
                dst,
                src,
                ifindex,
                egress: fib.ifindex,
                mtu,
                _pad: 0,
                expires_jiffies: now + HOP_CACHE_JIFFIES,
                macs,
                _pad2: [0; 4],
            };
        }
    }
    ctx.store(0, &macs, 0).ok()?;
    Some(tc_action(ifindex, fib.ifindex))
}

/// Out of the interface the packet is on already, or redirected to the next hop's.
#[inline(always)]
fn tc_action(ifindex: u32, egress: u32) -> i32 {
    if egress == ifindex {
        TC_ACT_OK
    } else {
        unsafe { bpf_redirect(egress, 0) as i32 }
    }
}
