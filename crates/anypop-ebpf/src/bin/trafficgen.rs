//! `trafficgen`: the lab's load tool. Run through BPF_PROG_TEST_RUN in live-frames mode, every
//! repetition is a real frame that XDP_TX sends out of the chosen interface. Before sending, the
//! program gives each frame a fresh source address (random within a prefix) and, optionally, a
//! random source port: a random-source flood at the rate the kernel can build frames.
#![no_std]
#![no_main]

use anypop_ebpf::csum;
use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_prandom_u32,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

anypop_ebpf::license!();

/// What to randomise.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenConfig {
    /// Source base, host byte order.
    pub src_base: u32,
    /// Host-order bits of the source to randomise (0: fixed source).
    pub src_mask: u32,
    /// 1: random UDP/TCP source port.
    pub random_sport: u32,
    /// Bytes of `template` to write over every frame before it leaves (0: none).
    pub template_len: u32,
    /// The frame as user space built it. A receiver that rewrites a frame in place (our edge
    /// encapsulates in the same page, across a veth) hands the page back to the generator's pool
    /// changed; rewriting it from here makes every frame the intended one again.
    pub template: [u8; TEMPLATE_MAX],
}

/// Longest frame the template restores.
pub const TEMPLATE_MAX: usize = 128;

#[map]
static TG_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);

/// Each CPU's random-number state (xorshift64*): an inlined array read and a few instructions
/// per frame instead of `bpf_get_prandom_u32`, whose helper call (through the return thunk of
/// this CPU's mitigations) was a large part of a random-source frame's cost. Statistical
/// quality is ample for spreading sources and ports; nothing here is a secret.
#[map]
static TG_RANDOM: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// 64 random bits from this CPU's state, seeded by the kernel's generator on first use.
#[inline(always)]
fn next_random() -> u64 {
    let Some(state) = TG_RANDOM.get_ptr_mut(0) else {
        return unsafe { bpf_get_prandom_u32() } as u64;
    };
    // Per-CPU: no other writer.
    unsafe {
        let mut x = *state;
        if x == 0 {
            x = ((bpf_get_prandom_u32() as u64) << 32) | bpf_get_prandom_u32() as u64 | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[xdp]
pub fn trafficgen(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    // Ethernet (14) + IPv4 without options (20) + ports (4).
    if start + 38 > end {
        return xdp_action::XDP_TX;
    }
    let cfg = match TG_CONFIG.get(0) {
        Some(c) => c,
        None => return xdp_action::XDP_TX,
    };
    // Eight bytes at a time, then the tail byte by byte.
    let len = cfg.template_len as usize;
    let mut i = 0usize;
    while i + 8 <= TEMPLATE_MAX {
        if i + 8 > len || start + i + 8 > end {
            break;
        }
        // Volatile: otherwise LLVM turns this loop into a `memcpy` call of variable length,
        // which BPF cannot express. Live frames start 8-byte aligned (page + fixed headroom).
        unsafe {
            let w = core::ptr::read_unaligned(cfg.template.as_ptr().add(i) as *const u64);
            core::ptr::write_volatile((start + i) as *mut u64, w);
        }
        i += 8;
    }
    while i < TEMPLATE_MAX {
        if i >= len || start + i + 1 > end {
            break;
        }
        unsafe {
            let b = core::ptr::read(cfg.template.as_ptr().add(i));
            core::ptr::write_volatile((start + i) as *mut u8, b);
        }
        i += 1;
    }
    let ip = (start + 14) as *mut u16;
    let random = if cfg.src_mask != 0 || cfg.random_sport != 0 {
        next_random()
    } else {
        0
    };
    unsafe {
        if cfg.src_mask != 0 {
            let r = (random >> 32) as u32;
            let src = (cfg.src_base & !cfg.src_mask) | (r & cfg.src_mask);
            let be = src.to_be();
            core::ptr::write(ip.add(6), be as u16);
            core::ptr::write(ip.add(7), (be >> 16) as u16);
            // Recompute the header checksum over the ten words.
            core::ptr::write(ip.add(5), 0);
            let mut sum = 0u32;
            let mut i = 0;
            while i < 10 {
                sum += u16::from_be(core::ptr::read(ip.add(i))) as u32;
                i += 1;
            }
            core::ptr::write(ip.add(5), csum::checksum(sum).to_be());
        }
        // ICMP has no ports: its first L4 bytes are type, code and checksum.
        let proto = core::ptr::read((start + 23) as *const u8);
        if cfg.random_sport != 0 && proto != 1 {
            let port = (random as u16) | 1024;
            // The UDP checksum of generated frames is 0 (none); TCP SYN floods carry a checksum
            // that no longer matches (the edge decides on headers, never on L4 checksums).
            core::ptr::write(ip.add(10), port.to_be());
        }
    }
    xdp_action::XDP_TX
}
