//! Baseline programs for the benchmarks: what an XDP program costs when it does (almost)
//! nothing, so every figure of ours stands beside the floor measured in the same run.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
