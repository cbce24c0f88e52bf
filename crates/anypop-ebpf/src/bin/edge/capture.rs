//! Packet sampling for `anypop capture`: after the verdict, a packet whose reason (and service)
//! the operator asked for is copied, with its verdict, into a ring buffer — at most
//! `per_cpu_pps` a second per CPU, so a flood cannot flood the ring or the reader. Off (the
//! default), it costs one array read and one bit test per packet.
//!
//! A request carries a deadline (`expires`, seconds of the monotonic clock) that its capture
//! keeps pushing ahead while it runs: a capture killed without clearing its request stops
//! sampling within seconds, checked here, on the sampling path only.
use anypop_common::{
    layout::{
        CAPTURE_RING_BYTES, CAPTURE_SNAPLEN, CaptureConfig, CaptureRecord, CaptureWindow, NONE,
    },
    verdict::Reason,
};
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_ktime_get_ns, generated::bpf_xdp_load_bytes},
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    programs::XdpContext,
};

#[map]
static CAPTURE: Array<CaptureConfig> = Array::pinned(1, 0);
#[map]
static CAPTURE_WIN: PerCpuArray<CaptureWindow> = PerCpuArray::pinned(1, 0);
#[map]
static CAPTURE_RING: RingBuf = RingBuf::pinned(CAPTURE_RING_BYTES, 0);

// The reason bitmap is 32 bits wide (the low half of what was one u64: see `CaptureConfig`).
const _: () = {
    let mut i = 0;
    while i < Reason::ALL.len() {
        assert!(
            (Reason::ALL[i] as u32) < 32,
            "a verdict reason does not fit the capture bitmap"
        );
        i += 1;
    }
    assert!(core::mem::offset_of!(CaptureConfig, expires) == 4);
    assert!(core::mem::size_of::<CaptureConfig>() == 16);
};

/// Who decided a packet's fate, filled in as the program learns it.
pub struct Who {
    pub service: u32,
    pub rule: u32,
    pub generation: u32,
}

impl Who {
    #[inline(always)]
    pub fn new() -> Who {
        Who {
            service: NONE,
            rule: NONE,
            generation: 0,
        }
    }
}

/// Samples the packet if a capture asks for its reason.
#[inline(always)]
pub fn maybe_sample(ctx: &XdpContext, action: u32, reason: u32, who: &Who) {
    if let Some(c) = CAPTURE.get(0) {
        if (c.reasons >> (reason & 31)) & 1 != 0 {
            // BPF calls take at most five arguments: action and reason travel in one.
            sample(ctx, c, (action << 8) | (reason & 0xff), who);
        }
    }
}

#[inline(never)]
fn sample(ctx: &XdpContext, c: &CaptureConfig, action_reason: u32, who: &Who) {
    if c.service != NONE && c.service != who.service {
        return;
    }
    let Some(w) = CAPTURE_WIN.get_ptr_mut(0) else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // A request whose capture stopped renewing it (killed, stopped) samples nothing.
    if c.expires != 0 && (now / 1_000_000_000) as u32 >= c.expires {
        return;
    }
    // Per-CPU window: no other writer.
    unsafe {
        if now.wrapping_sub((*w).start_ns) >= 1_000_000_000 {
            (*w).start_ns = now;
            (*w).taken = 0;
        }
        if (*w).taken >= c.per_cpu_pps {
            return;
        }
        (*w).taken += 1;
    }
    let Some(mut entry) = CAPTURE_RING.reserve::<CaptureRecord>(0) else {
        return;
    };
    let len = (ctx.data_end() - ctx.data()) as u32;
    let caplen = if len > CAPTURE_SNAPLEN {
        CAPTURE_SNAPLEN
    } else {
        len
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        (*rec).action = action_reason >> 8;
        (*rec).reason = action_reason & 0xff;
        (*rec).service = who.service;
        (*rec).rule = who.rule;
        (*rec).generation = who.generation;
        (*rec).len = len;
        (*rec)._pad = 0;
        // The helper wants a length the verifier can bound to 1..=SNAPLEN: ((n - 1) & 255) + 1
        // is that by construction (and equals caplen, which is 1..=256 for any real frame).
        let n = (caplen.wrapping_sub(1) & (CAPTURE_SNAPLEN - 1)) + 1;
        let copied = bpf_xdp_load_bytes(
            ctx.as_ptr() as *mut _,
            0,
            (*rec).data.as_mut_ptr() as *mut _,
            n,
        ) == 0;
        (*rec).caplen = if copied { n } else { 0 };
    }
    entry.submit(0);
}
