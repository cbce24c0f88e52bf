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
    } else {
        // Every index the programs count is in range. Said to LLVM, it keeps the missing-slot
        // branch out of the counted path: without the hint, this function inlined from the
        // library (rather than copied into each program, as it was) left `decap` and `dsr` a
        // jump longer.
        core::hint::cold_path();
    }
}
