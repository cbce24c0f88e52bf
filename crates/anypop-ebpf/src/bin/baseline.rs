//! Baseline programs for the benchmarks: what an XDP program costs when it does (almost)
//! nothing, so every figure of ours stands beside the floor measured in the same run.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

anypop_ebpf::license!();

/// Returns XDP_PASS without touching the packet.
#[xdp]
pub fn base_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Returns XDP_DROP without touching the packet: the cheapest possible flood drop.
#[xdp]
pub fn base_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Reads the EtherType and the IPv4 source address, then returns XDP_DROP (XDP_PASS for a frame
/// too short or not IPv4): the cheapest flood drop that looks at the packet. On veth the frame's
/// cache lines were last written by the sender's CPU, so the first read of them costs a
/// cross-CPU transfer that `base_drop`, which never reads, does not pay — but every real filter
/// does (as it does on a NIC, whose DMA leaves the frame outside the CPU's caches).
#[xdp]
pub fn base_drop_read(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 30 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    // Volatile: the reads are the point of this program, the compiler must not drop them.
    let (ethertype, src) = unsafe {
        (
            core::ptr::read_volatile((start + 12) as *const u16),
            core::ptr::read_volatile((start + 26) as *const u32),
        )
    };
    if ethertype != 0x0008 || src == 0 {
        return xdp_action::XDP_PASS;
    }
    xdp_action::XDP_DROP
}

/// Swaps source and destination MAC and returns XDP_TX: the cheapest possible forward.
#[xdp]
pub fn base_tx(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    let eth = start as *mut [u8; 12];
    unsafe {
        let e = &mut *eth;
        let mut tmp = [0u8; 6];
        tmp.copy_from_slice(&e[0..6]);
        e.copy_within(6..12, 0);
        e[6..12].copy_from_slice(&tmp);
    }
    xdp_action::XDP_TX
}

/// Returns TC_ACT_OK without touching the packet: the floor for TC programs.
#[classifier]
pub fn base_tc(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}
