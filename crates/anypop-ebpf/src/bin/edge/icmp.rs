//! The answer to a packet too big to tunnel: ICMP "fragmentation needed", built in place, or
//! `drop_mtu`.
use anypop_common::{layout::PROTO_ICMP, verdict::Reason};
use anypop_ebpf::{
    counters::add,
    csum,
    parse::{self, IPV4_HLEN},
};
use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};

use crate::{capture, maps::COUNTERS};

const ICMP_ECHO_REQUEST: u8 = 8;
/// An ICMP error quotes the offending packet's IPv4 header (without options) and 8 bytes of
/// its payload: the ports and, for TCP, the sequence number the sender checks.
const ICMP_QUOTE: usize = 28;
/// The ICMP error's own IPv4 and ICMP headers.
const ICMP_HEADERS: usize = 28;

/// A packet too big to tunnel through an egress of MTU `egress_mtu`: counted, sampled for a
/// capture (as it arrived) and answered or dropped (see [`frag_needed_answerable`]); returns
/// the action. A global BPF function: the verifier checks it once, on its own, instead of once
/// for every state in which the program reaches it (inlined, it more than doubled the edge's
/// load time).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn edge_too_big(
    ctx: *mut xdp_md,
    egress_mtu: u32,
    service: u32,
    rule: u32,
    generation: u32,
) -> u32 {
    let ctx = XdpContext::new(ctx);
    let frame_len = (parse::data_end(&ctx) - parse::data(&ctx)) as u64;
    let l2 = frag_needed_answerable(&ctx, egress_mtu);
    let (action, reason) = match l2 {
        Some(_) => (xdp_action::XDP_TX, Reason::DropMtuIcmp),
        None => (xdp_action::XDP_DROP, Reason::DropMtu),
    };
    add(&COUNTERS, reason as u32, frame_len);
    let who = capture::Who {
        service,
        rule,
        generation,
    };
    capture::maybe_sample(&ctx, action, reason as u32, &who);
    match l2 {
        // Counted as answered: the resize cannot fail for a frame this big.
        Some(l2) => write_frag_needed(&ctx, l2, egress_mtu),
        None => action,
    }
}

/// The packet would exceed the egress MTU (`egress_mtu`) once encapsulated. A DF packet is
/// answered with ICMP "fragmentation needed" announcing the MTU left for it inside the tunnel,
/// so the player's path-MTU discovery (TCP above all) sends smaller packets instead of
/// retrying into a black hole; anything else is dropped (`drop_mtu`): XDP cannot fragment, and
/// ICMP errors are never answered with one (nor are packets with IP options, which the quote
/// would have to carry). Returns the length of the L2 header when the packet is answered.
/// Per-source rate limits have already applied, and the answer is smaller than the packet: no
/// amplification.
#[inline(always)]
fn frag_needed_answerable(ctx: &XdpContext, egress_mtu: u32) -> Option<usize> {
    let no = None;
    if !((IPV4_HLEN + 68) as u32..=0xffff).contains(&egress_mtu) {
        return no;
    }
    // The L2 header again (up to two VLAN tags): the parse's summary is not kept this far.
    let l2 = match parse::ethernet(ctx) {
        Some((l2, _)) => l2,
        None => return no,
    };
    // The quote: IPv4 header (no options) and 8 bytes.
    let q = match parse::words_at(ctx, l2, ICMP_QUOTE / 2) {
        Some(p) => p,
        None => return no,
    };
    let w0 = u16::from_be(parse::w(q, 0));
    let df = u16::from_be(parse::w(q, 3)) & 0x4000 != 0;
    let proto = u16::from_be(parse::w(q, 4)) as u8;
    let icmp_type = (u16::from_be(parse::w(q, 10)) >> 8) as u8;
    if w0 >> 8 != 0x45 || !df || (proto == PROTO_ICMP && icmp_type != ICMP_ECHO_REQUEST) {
        return no;
    }
    Some(l2)
}

/// Turns the frame into the answer [`frag_needed_answerable`] allowed (`l2`: its L2 header's
/// length) and returns the action: XDP_TX, or XDP_DROP if the frame cannot be resized. Built in
/// place, to leave the way the packet came, from the VIP to the player: the tail after the
/// quote is cut, the L2 header (with its VLAN tags) moves 28 bytes to the front, and our IPv4 +
/// ICMP headers fill the gap before the quote, which stays where it was.
#[inline(always)]
fn write_frag_needed(ctx: &XdpContext, l2: usize, egress_mtu: u32) -> u32 {
    let fail = xdp_action::XDP_DROP;
    if l2 > 22 {
        return fail;
    }
    let (player, vip) = match parse::words_at(ctx, l2, ICMP_QUOTE / 2) {
        Some(q) => (parse::w32(q, 6), parse::w32(q, 8)),
        None => return fail,
    };
    let start = parse::data(ctx);
    let end = parse::data_end(ctx);
    let cut = (l2 + ICMP_QUOTE) as i32 - (end - start) as i32;
    if cut < 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, cut) } != 0 {
        return fail;
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ICMP_HEADERS as i32)) } != 0 {
        return fail;
    }
    // The old L2 header is now at [28, 28 + l2). Its 22-byte window is copied to the front
    // whatever `l2` is (no branch per word for the verifier to follow): what lands beyond `l2`
    // is overwritten by our headers below. The frame holds at least 14 + 56 bytes.
    let start = parse::data(ctx);
    let end = parse::data_end(ctx);
    if start + ICMP_HEADERS + 22 > end {
        return fail;
    }
    let old = (start + ICMP_HEADERS) as *const u16;
    let mut l2_words = [0u16; 11];
    let mut i = 0;
    while i < 11 {
        l2_words[i] = unsafe { core::ptr::read(old.add(i)) };
        i += 1;
    }
    // Back to the sender: its MAC becomes the destination, ours the source.
    l2_words.swap(0, 3);
    l2_words.swap(1, 4);
    l2_words.swap(2, 5);
    let new = start as *mut u16;
    let mut i = 0;
    while i < 11 {
        unsafe { core::ptr::write(new.add(i), l2_words[i]) };
        i += 1;
    }
    let hdrs = match parse::words_at(ctx, l2, (ICMP_HEADERS + ICMP_QUOTE) / 2) {
        Some(p) => p as *mut u16,
        None => return fail,
    };
    unsafe {
        let ip: [u16; 10] = [
            u16::from_be(0x45c0),
            u16::from_be((IPV4_HLEN + 8 + ICMP_QUOTE) as u16),
            0,
            0,
            u16::from_be((64 << 8) | PROTO_ICMP as u16),
            0,
            (vip & 0xffff) as u16,
            (vip >> 16) as u16,
            (player & 0xffff) as u16,
            (player >> 16) as u16,
        ];
        let mut sum = 0u32;
        let mut i = 0;
        while i < 10 {
            sum += ip[i] as u32;
            core::ptr::write(hdrs.add(i), ip[i]);
            i += 1;
        }
        core::ptr::write(hdrs.add(5), csum::checksum(sum));
        // Type 3 (destination unreachable), code 4 (fragmentation needed), the next-hop MTU.
        let icmp: [u16; 4] = [
            u16::from_be(0x0304),
            0,
            0,
            u16::from_be((egress_mtu - IPV4_HLEN as u32) as u16),
        ];
        let mut sum = 0u32;
        let mut i = 0;
        while i < 4 {
            sum += icmp[i] as u32;
            core::ptr::write(hdrs.add(10 + i), icmp[i]);
            i += 1;
        }
        let mut i = 0;
        while i < ICMP_QUOTE / 2 {
            sum += core::ptr::read(hdrs.add(14 + i)) as u32;
            i += 1;
        }
        core::ptr::write(hdrs.add(11), csum::checksum(sum));
    }
    xdp_action::XDP_TX
}
