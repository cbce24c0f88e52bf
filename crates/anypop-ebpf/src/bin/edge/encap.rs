//! Step 10, the tunnel: the outer IPv4 header, the next hop from `bpf_fib_lookup` (cached per
//! CPU per backend) and the way out.
use anypop_common::{layout::*, verdict::Reason};
use anypop_ebpf::{
    csum,
    parse::{self, AF_INET, ETH_HLEN, IPPROTO_IPIP, IPV4_HLEN, Packet},
    zero_words,
};
use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    helpers::{bpf_fib_lookup as fib_lookup, bpf_jiffies64, bpf_xdp_adjust_head},
    programs::XdpContext,
};

use crate::{
    maps::{FIB_CACHE, IFACES, TX_PORTS},
    verdict::{Verdict, drop, pass, too_big, verdict},
};

/// Wraps the IPv4 packet in an outer IPv4 header (protocol 4) from the tunnel source to the
/// backend and sends it toward the FIB's next hop.
#[inline(always)]
pub fn encapsulate(
    ctx: &XdpContext,
    pkt: &Packet,
    settings: &Settings,
    backend: u32,
    backend_index: u32,
) -> Verdict {
    let inner_len = pkt.ip_len as u32;
    let outer_len = inner_len + IPV4_HLEN as u32;
    if outer_len > 0xffff {
        return drop(Reason::DropMtu);
    }
    let ingress = ctx.ingress_ifindex() as u32;

    // A fresh cached FIB answer for this backend skips the lookup (this CPU's copy: no sharing).
    let now = unsafe { bpf_jiffies64() };
    let cache = FIB_CACHE.get_ptr_mut(backend_index & (MAX_BACKENDS - 1));
    if let Some(c) = cache {
        let c = unsafe { &*c };
        if c.backend == backend && c.ingress == ingress && now < c.expires_jiffies {
            if outer_len > c.mtu {
                return too_big(c.mtu);
            }
            let (smac, dmac, egress) = (c.smac, c.dmac, c.egress);
            return write_and_send(ctx, pkt, settings, backend, smac, dmac, egress, false);
        }
    }

    let mut fib_words = FibWords { w: [0; 8] };
    zero_words(&mut fib_words.w);
    let fib = unsafe { &mut *(&mut fib_words as *mut FibWords as *mut bpf_fib_lookup) };
    fib.family = AF_INET;
    fib.l4_protocol = IPPROTO_IPIP;
    fib.__bindgen_anon_1.tot_len = outer_len as u16;
    fib.ifindex = ingress;
    fib.__bindgen_anon_3.ipv4_src = settings.tunnel_source;
    fib.__bindgen_anon_4.ipv4_dst = backend;
    let rc = unsafe {
        fib_lookup(
            ctx.ctx as *mut _,
            fib as *mut _,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    let (smac, dmac, egress, via_kernel) = match rc as u32 {
        aya_ebpf::bindings::BPF_FIB_LKUP_RET_SUCCESS => {
            // Remember the answer, with the egress MTU that the cached path must check itself.
            if let (Some(c), Some(i)) = (cache, IFACES.get_ptr(&fib.ifindex)) {
                unsafe {
                    (*c).backend = backend;
                    (*c).ingress = ingress;
                    (*c).egress = fib.ifindex;
                    (*c).mtu = (*i).mtu as u32;
                    (*c).expires_jiffies = now + FIB_CACHE_JIFFIES;
                    (*c).smac = fib.smac;
                    (*c).dmac = fib.dmac;
                }
            }
            (fib.smac, fib.dmac, fib.ifindex, false)
        }
        aya_ebpf::bindings::BPF_FIB_LKUP_RET_FRAG_NEEDED => {
            // With `tot_len` given, the lookup reports the route's MTU in its place.
            let mtu = unsafe { fib.__bindgen_anon_1.mtu_result } as u32;
            return too_big(mtu);
        }
        aya_ebpf::bindings::BPF_FIB_LKUP_RET_NO_NEIGH => {
            // The next hop's MAC is not known yet: hand the encapsulated packet to the kernel,
            // addressed to our own MAC, and let it resolve the neighbour and forward it.
            let own = match IFACES.get_ptr(&ingress) {
                Some(i) => unsafe { (*i).mac },
                None => return drop(Reason::DropNoRoute),
            };
            (own, own, ingress, true)
        }
        _ => return drop(Reason::DropNoRoute),
    };

    write_and_send(ctx, pkt, settings, backend, smac, dmac, egress, via_kernel)
}

/// Rewrites the frame into Ethernet + outer IPv4 + inner packet and picks the action.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn write_and_send(
    ctx: &XdpContext,
    pkt: &Packet,
    settings: &Settings,
    backend: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
    egress: u32,
    via_kernel: bool,
) -> Verdict {
    let ingress = ctx.ingress_ifindex() as u32;
    let outer_len = pkt.ip_len as u32 + IPV4_HLEN as u32;
    // Grow the head: remove the old L2 header (with any VLAN tags), add 14 + 20.
    let delta = (pkt.l3_off as i32) - (ETH_HLEN + IPV4_HLEN) as i32;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return drop(Reason::DropAdjustFailed);
    }
    let start = parse::data(ctx);
    let end = parse::data_end(ctx);
    if start + ETH_HLEN + IPV4_HLEN > end {
        return drop(Reason::DropAdjustFailed);
    }
    let eth = start as *mut [u8; ETH_HLEN];
    let ip = (start + ETH_HLEN) as *mut [u16; 10];
    unsafe {
        let e = &mut *eth;
        e[0..6].copy_from_slice(&dmac);
        e[6..12].copy_from_slice(&smac);
        e[12] = 0x08;
        e[13] = 0x00;

        let tos = pkt.tos as u16;
        let words: [u16; 10] = [
            u16::from_be((0x45u16 << 8) | tos),
            u16::from_be(outer_len as u16),
            0,
            if pkt.dont_fragment {
                u16::from_be(0x4000)
            } else {
                0
            },
            u16::from_be(((settings.outer_ttl as u16 & 0xff) << 8) | IPPROTO_IPIP as u16),
            0,
            (settings.tunnel_source & 0xffff) as u16,
            (settings.tunnel_source >> 16) as u16,
            (backend & 0xffff) as u16,
            (backend >> 16) as u16,
        ];
        let mut sum = 0u32;
        for w in words.iter() {
            sum += *w as u32;
        }
        let o = &mut *ip;
        *o = words;
        o[5] = csum::checksum(sum);
    }
    if via_kernel {
        return pass(Reason::FwdIpipKernel);
    }
    if egress == ingress {
        return verdict(xdp_action::XDP_TX, Reason::FwdIpip);
    }
    match TX_PORTS.redirect(egress, 0) {
        Ok(a) => verdict(a, Reason::FwdIpip),
        Err(_) => drop(Reason::DropNoRoute),
    }
}

/// Backing store for `bpf_fib_lookup` (64 bytes), zeroed word by word.
#[repr(C, align(8))]
struct FibWords {
    w: [u64; 8],
}
