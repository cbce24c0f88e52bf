//! Header parsing for XDP with bounded work: Ethernet (up to two VLAN tags), IPv4 (options),
//! IPv6 (up to [`MAX_EXT_HEADERS`] extension headers), then UDP, TCP, ICMP, ICMPv6.
//!
//! Problems in the fixed IP header end the packet as `drop_malformed` straight away. Problems
//! beyond it (extension headers, L4) are only recorded in [`Packet::malformed_l4`]: whether they
//! matter depends on whether the packet is addressed to a VIP at all — traffic for the POP itself
//! is passed untouched, whatever it carries.
use crate::csum;
use anypop_common::{layout::*, verdict::Reason};
use aya_ebpf::programs::XdpContext;

/// An Ethernet header without VLAN tags.
pub const ETH_HLEN: usize = 14;
/// An IPv4 header without options.
pub const IPV4_HLEN: usize = 20;
/// The IP protocol of IPv4-in-IPv4 (the tunnel between POP and backend).
pub const IPPROTO_IPIP: u8 = 4;
/// `AF_INET`, as `bpf_fib_lookup` wants the family.
pub const AF_INET: u8 = 2;

/// EtherTypes.
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
/// VLAN tags: 802.1Q, and 802.1ad (the outer tag of "QinQ").
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// IPv6 extension headers walked before giving up (as malformed).
pub const MAX_EXT_HEADERS: usize = 8;
/// Offsets beyond this are not plausible for a frame XDP sees; bounding them keeps the verifier
/// able to prove every access.
const MAX_OFFSET: usize = 0x3fff;

/// What the rest of the program needs to know about a packet.
pub struct Packet {
    pub family: u8,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub fragment: bool,
    pub dont_fragment: bool,
    pub malformed_l4: bool,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    /// IPv4 total length; IPv6 40 + payload length (saturated at 65535).
    pub ip_len: u16,
    /// Offset of the IP header in the frame (14, 18 or 22).
    pub l3_off: usize,
    /// Addresses as 32-bit words in network byte order; IPv4 uses word 0.
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

/// Start of the frame. Read with a volatile load inside each BPF function: if LLVM were free to
/// hoist the read into the caller and pass it as a 32-bit argument, the verifier would see a
/// plain number instead of a packet pointer and refuse every access.
#[inline(always)]
pub fn data(ctx: &XdpContext) -> usize {
    unsafe { core::ptr::read_volatile(&(*ctx.ctx).data) as usize }
}

/// End of the frame; see [`data`].
#[inline(always)]
pub fn data_end(ctx: &XdpContext) -> usize {
    unsafe { core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize }
}

#[inline(always)]
fn load<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    let start = data(ctx);
    let end = data_end(ctx);
    if off > MAX_OFFSET || start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
}

/// A pointer to `words` 16-bit words at `off`, after the bounds check the verifier needs.
/// Headers are read as 16-bit words: every header field we use starts on an even offset (the
/// frame itself is at least 2-byte aligned), while a `u32` at offset 26 would be misaligned and
/// byte-wise copies cost several instructions per byte.
#[inline(always)]
pub fn words_at(ctx: &XdpContext, off: usize, words: usize) -> Option<*const u16> {
    let start = data(ctx);
    let end = data_end(ctx);
    if off > MAX_OFFSET || start + off + words * 2 > end {
        return None;
    }
    Some((start + off) as *const u16)
}

/// Word `i` in network byte order as read (use `u16::from_be` for the number). `p` comes from
/// [`words_at`], whose bounds check covers word `i` (and the verifier checks every read again).
#[inline(always)]
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn w(p: *const u16, i: usize) -> u16 {
    unsafe { core::ptr::read(p.add(i)) }
}

/// Two raw words as the `u32` whose native bytes are the packet's bytes (address words).
#[inline(always)]
pub fn w32(p: *const u16, i: usize) -> u32 {
    (w(p, i) as u32) | ((w(p, i + 1) as u32) << 16)
}

/// The Ethernet header, with up to two VLAN tags: the EtherType of what follows and its offset
/// (14, 18 or 22). `None` if the frame ends first.
#[inline(always)]
pub fn ethernet(ctx: &XdpContext) -> Option<(usize, u16)> {
    let mut l3 = ETH_HLEN;
    let mut eth_type = u16::from_be(w(words_at(ctx, ETH_HLEN - 2, 1)?, 0));
    let mut tag = 0;
    while tag < 2 && (eth_type == ETH_P_8021Q || eth_type == ETH_P_8021AD) {
        eth_type = u16::from_be(w(words_at(ctx, l3 + 2, 1)?, 0));
        l3 += 4;
        tag += 1;
    }
    Some((l3, eth_type))
}

/// Parses into `p`. Inlined into the program: a BPF-to-BPF call, its return and the spills
/// around it cost more than the whole IPv4 parse.
#[inline(always)]
pub fn parse_packet(ctx: &XdpContext, p: &mut Packet) -> Result<(), Reason> {
    let frame_len = data_end(ctx) - data(ctx);
    // The Ethernet header, as [`ethernet`] reads it, written out here: through that function
    // (or shaped any other way tried), the same logic made the edge's verifier explore 1.9 times
    // as many instructions (342k instead of 182k) and the edge load in twice the time.
    let mut eth_type = match load::<[u8; 2]>(ctx, 12) {
        Some(t) => ((t[0] as u16) << 8) | t[1] as u16,
        None => return Err(Reason::DropMalformed),
    };
    let mut l3_off = ETH_HLEN;
    let mut tag = 0;
    while tag < 2 {
        if eth_type != ETH_P_8021Q && eth_type != ETH_P_8021AD {
            break;
        }
        eth_type = match load::<[u8; 2]>(ctx, l3_off + 2) {
            Some(t) => ((t[0] as u16) << 8) | t[1] as u16,
            None => return Err(Reason::DropMalformed),
        };
        l3_off += 4;
        tag += 1;
    }
    p.l3_off = l3_off;
    match eth_type {
        ETH_P_IP => parse_v4(ctx, frame_len, p),
        ETH_P_IPV6 => parse_v6(ctx, frame_len, p),
        _ => Err(Reason::PassNotIp),
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, frame_len: usize, p: &mut Packet) -> Result<(), Reason> {
    let l3 = p.l3_off;
    let h = words_at(ctx, l3, 10).ok_or(Reason::DropMalformed)?;
    let w0 = u16::from_be(w(h, 0));
    if w0 >> 12 != 4 {
        return Err(Reason::DropMalformed);
    }
    let ihl = (((w0 >> 8) & 0x0f) as usize) * 4;
    let tot_len = u16::from_be(w(h, 1)) as usize;
    if ihl < 20 || tot_len < ihl || l3 + tot_len > frame_len {
        return Err(Reason::DropMalformed);
    }
    let frag = u16::from_be(w(h, 3));
    let ttl_proto = u16::from_be(w(h, 4));
    p.family = FAMILY_V4;
    p.tos = w0 as u8;
    p.ttl = (ttl_proto >> 8) as u8;
    p.proto = ttl_proto as u8;
    p.ip_len = tot_len as u16;
    p.src[0] = w32(h, 6);
    p.dst[0] = w32(h, 8);
    // A corrupt header checksum must not be forwarded (the backend would drop it anyway, after the
    // POP paid for it). Judged like an L4 problem: it only matters for traffic to a VIP.
    let mut sum = 0u32;
    let mut i = 0;
    while i < 10 {
        sum += u16::from_be(w(h, i)) as u32;
        i += 1;
    }
    if ihl > 20 {
        sum += options_sum(ctx, l3, ihl);
    }
    if csum::fold(sum) != 0xffff {
        p.malformed_l4 = true;
    }
    p.dont_fragment = frag & 0x4000 != 0;
    if frag & 0x1fff != 0 {
        // A non-first fragment carries no L4 header: only the fragment policy can judge it.
        p.fragment = true;
        return Ok(());
    }
    parse_l4(ctx, l3 + ihl, tot_len - ihl, p);
    Ok(())
}

/// Sum of the 16-bit words of IPv4 options (rare: kept out of the common path).
#[inline(always)]
fn options_sum(ctx: &XdpContext, l3: usize, ihl: usize) -> u32 {
    let mut sum = 0u32;
    let mut off = 20;
    while off < 60 {
        if off >= ihl {
            break;
        }
        match words_at(ctx, l3 + off, 2) {
            Some(o) => sum += u16::from_be(w(o, 0)) as u32 + u16::from_be(w(o, 1)) as u32,
            // Cannot happen (tot_len >= ihl was checked); an odd sum marks it malformed.
            None => return 0x1_0000,
        }
        off += 4;
    }
    sum
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, frame_len: usize, p: &mut Packet) -> Result<(), Reason> {
    let l3 = p.l3_off;
    let h = words_at(ctx, l3, 20).ok_or(Reason::DropMalformed)?;
    let w0 = u16::from_be(w(h, 0));
    if w0 >> 12 != 6 {
        return Err(Reason::DropMalformed);
    }
    let payload = u16::from_be(w(h, 2)) as usize;
    if l3 + 40 + payload > frame_len {
        return Err(Reason::DropMalformed);
    }
    let next_hop = u16::from_be(w(h, 3));
    p.family = FAMILY_V6;
    p.tos = (w0 >> 4) as u8;
    p.ttl = next_hop as u8;
    let total = 40 + payload;
    p.ip_len = if total > 0xffff { 0xffff } else { total as u16 };
    p.src = [w32(h, 4), w32(h, 6), w32(h, 8), w32(h, 10)];
    p.dst = [w32(h, 12), w32(h, 14), w32(h, 16), w32(h, 18)];

    let mut next = (next_hop >> 8) as u8;
    let mut off = l3 + 40;
    let mut remaining = payload;
    let mut i = 0;
    while i < MAX_EXT_HEADERS {
        let len = match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units, not counting
            // the first 8.
            0 | 43 | 60 => match load::<[u8; 2]>(ctx, off) {
                Some(e) => {
                    next = e[0];
                    (e[1] as usize + 1) * 8
                }
                None => {
                    p.malformed_l4 = true;
                    return Ok(());
                }
            },
            // Authentication header: length in 4-octet units, minus 2.
            51 => match load::<[u8; 2]>(ctx, off) {
                Some(e) => {
                    next = e[0];
                    (e[1] as usize + 2) * 4
                }
                None => {
                    p.malformed_l4 = true;
                    return Ok(());
                }
            },
            44 => {
                p.proto = next;
                p.fragment = true;
                return Ok(());
            }
            _ => break,
        };
        if len > remaining {
            p.malformed_l4 = true;
            return Ok(());
        }
        off += len;
        remaining -= len;
        i += 1;
    }
    if matches!(next, 0 | 43 | 60 | 51 | 44) {
        // Still inside the extension header chain after the bound: refuse to guess.
        p.malformed_l4 = true;
        return Ok(());
    }
    p.proto = next;
    parse_l4(ctx, off, remaining, p);
    Ok(())
}

#[inline(always)]
fn parse_l4(ctx: &XdpContext, off: usize, payload: usize, p: &mut Packet) {
    match p.proto {
        PROTO_UDP => match words_at(ctx, off, 4) {
            Some(u) if payload >= 8 => {
                let ulen = u16::from_be(w(u, 2)) as usize;
                if ulen < 8 || ulen > payload {
                    p.malformed_l4 = true;
                }
                p.sport = u16::from_be(w(u, 0));
                p.dport = u16::from_be(w(u, 1));
            }
            _ => p.malformed_l4 = true,
        },
        PROTO_TCP => match words_at(ctx, off, 10) {
            Some(t) if payload >= 20 => {
                let off_flags = u16::from_be(w(t, 6));
                let doff = ((off_flags >> 12) as usize) * 4;
                if doff < 20 || doff > payload {
                    p.malformed_l4 = true;
                }
                p.sport = u16::from_be(w(t, 0));
                p.dport = u16::from_be(w(t, 1));
                p.tcp_flags = off_flags as u8;
            }
            _ => p.malformed_l4 = true,
        },
        PROTO_ICMP | PROTO_ICMPV6 => match words_at(ctx, off, 2) {
            Some(c) if payload >= 4 => p.icmp_type = (u16::from_be(w(c, 0)) >> 8) as u8,
            _ => p.malformed_l4 = true,
        },
        _ => {}
    }
}
