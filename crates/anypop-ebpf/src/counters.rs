//! Per-CPU packet and byte counters: every verdict, service, rule and backend hit.
use anypop_common::layout::Counter;
use aya_ebpf::maps::PerCpuArray;

/// Counts one packet of `bytes` bytes in slot `index` of `map` (nothing if out of range).
#[inline(always)]
pub fn add(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // Per-CPU slot: no other writer, plain adds are exact.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
