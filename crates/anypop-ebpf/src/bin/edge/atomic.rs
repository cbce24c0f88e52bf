//! Compare-and-swap and fetch-add on map values.
//!
//! The `bpfel` target does not advertise CAS to `core::sync::atomic`, although the kernel has had
//! BPF_ATOMIC cmpxchg/fetch-add since 5.12; the intrinsics below lower to exactly those
//! instructions.
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

/// Atomically replaces `*p` with `new` if it still holds `old`; true on success.
#[inline(always)]
pub fn cas_u64(p: *mut u64, old: u64, new: u64) -> bool {
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(p, old, new).1
    }
}

/// Atomically adds `v` to `*p`, returning the previous value.
///
/// Not `Relaxed`: LLVM's BPF backend lowers a relaxed (monotonic) `atomicrmw add` to the
/// non-fetch `lock *(u64 *)p += v` even when the result is used, so the "previous value" was
/// `v` itself (llvm/llvm-project#210280); the new-source cap compared 1 with its limit and never
/// dropped. A stronger ordering selects `atomic_fetch_add` (BPF_FETCH), the one BPF add that
/// returns the old value; the kernel runs it fully ordered whatever the ordering asked for, so
/// `SeqCst` costs nothing more.
#[inline(always)]
pub fn fetch_add_u64(p: *mut u64, v: u64) -> u64 {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) }
}

/// An aligned 64-bit load is a single BPF instruction and so never torn; volatile keeps the
/// compiler from caching it across the compare-and-swap.
#[inline(always)]
pub fn load_u64(p: *mut u64) -> u64 {
    unsafe { core::ptr::read_volatile(p) }
}

/// See [`load_u64`].
#[inline(always)]
pub fn store_u64(p: *mut u64, v: u64) {
    unsafe { core::ptr::write_volatile(p, v) }
}
