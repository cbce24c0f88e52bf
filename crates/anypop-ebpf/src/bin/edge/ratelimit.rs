//! Step 7, the per-source rate limit: GCRA buckets shared by all CPUs, updated with BPF
//! compare-and-swap, and the new-source cap that guards their LRU against random-source floods.
use anypop_common::{
    gcra::{self, Gcra},
    layout::*,
    verdict::Reason,
};
use anypop_ebpf::{parse::Packet, zero_words};
use aya_ebpf::helpers::bpf_ktime_get_ns;

use crate::{
    atomic::{cas_u64, fetch_add_u64, load_u64, store_u64},
    maps::{BUCKETS, NEWSRC, PROFILES},
};

/// Returns a drop reason (as `u32`) when the source is over its limit or blocked, else [`NONE`].
/// Not inlined: its own stack frame.
#[inline(never)]
pub fn rate_limit(
    generation: u32,
    service_id: u32,
    profile_index: u32,
    pkt: &Packet,
    settings: &Settings,
) -> u32 {
    match rate_limit_inner(generation, service_id, profile_index, pkt, settings) {
        Some(r) => r as u32,
        None => NONE,
    }
}

#[inline(always)]
fn rate_limit_inner(
    generation: u32,
    service_id: u32,
    profile_index: u32,
    pkt: &Packet,
    settings: &Settings,
) -> Option<Reason> {
    let profile = PROFILES.get(generation * MAX_PROFILES + (profile_index & (MAX_PROFILES - 1)))?;
    let mut key_words = Words4 { w: [0; 4] };
    zero_words(&mut key_words.w);
    let key = unsafe { &mut *(&mut key_words as *mut Words4 as *mut BucketKey) };
    key.service_id = service_id;
    key.profile_id = profile.stable_id;
    key.family = pkt.family;
    key.src = pkt.src;
    let key: &BucketKey = key;
    let now = unsafe { bpf_ktime_get_ns() };
    let bucket = match BUCKETS.get_ptr_mut(key) {
        Some(b) => b,
        None => {
            // A source we have not seen: the new-source cap blunts random-source floods that
            // would otherwise churn the LRU and give every spoofed packet a fresh bucket.
            if settings.new_source_cap != 0 {
                if let Some(w) = NEWSRC.get_ptr_mut(0) {
                    let start = unsafe { &raw mut (*w).window_start_ns };
                    let count = unsafe { &raw mut (*w).count };
                    if now.wrapping_sub(load_u64(start)) >= gcra::NS_PER_SEC {
                        // Two CPUs may both reset the window: harmless, both start it at ~now.
                        store_u64(start, now);
                        store_u64(count, 0);
                    }
                    if fetch_add_u64(count, 1) >= settings.new_source_cap as u64 {
                        return Some(Reason::DropSourceCap);
                    }
                }
            }
            let mut fresh = Words4 { w: [0; 4] };
            zero_words(&mut fresh.w);
            let fresh = unsafe { &*(&fresh as *const Words4 as *const Bucket) };
            // BPF_NOEXIST: if another CPU created it meanwhile, theirs wins; either is empty.
            let _ = BUCKETS.insert(key, fresh, 1);
            match BUCKETS.get_ptr_mut(key) {
                Some(b) => b,
                // Could not store a bucket (map full and LRU could not evict): let it through
                // rather than drop players.
                None => return None,
            }
        }
    };
    unsafe {
        let blocked = &raw mut (*bucket).blocked_until_ns;
        if now < load_u64(blocked) {
            return Some(Reason::DropBlocked);
        }
        let mut ok = true;
        if profile.flags & PF_PPS != 0 {
            ok = charge(
                &raw mut (*bucket).tat_packets,
                now,
                profile.packet_cost_ns,
                profile.depth_ns,
            );
        }
        if ok && profile.flags & PF_BPS != 0 {
            let cost = gcra::bytes_cost_ns(pkt.ip_len as u64, profile.byte_cost_fixed);
            ok = charge(&raw mut (*bucket).tat_bytes, now, cost, profile.depth_ns);
        }
        if !ok {
            if profile.block_ns != 0 {
                store_u64(blocked, now + profile.block_ns);
            }
            return Some(Reason::DropRateLimit);
        }
    }
    None
}

/// Offers the packet to one of its GCRA buckets with compare-and-swap, so all CPUs share one
/// exact bucket per source. A lost race is retried once; after a second one the packet is still
/// charged, never admitted for free: by an atomic add of its cost when the bucket runs ahead of
/// the clock (as it does while other CPUs keep charging it: exact, no other CPU's charge is
/// lost), else by a plain store of the new TAT (an idle bucket that several CPUs charge at
/// once: at most one packet of accuracy).
#[inline(always)]
fn charge(slot: *mut u64, now: u64, cost: u64, depth: u64) -> bool {
    let mut tries = 0;
    while tries < 2 {
        let tat = load_u64(slot);
        match gcra::offer(tat, now, cost, depth) {
            Gcra::Deny => return false,
            Gcra::Allow(new) => {
                if cas_u64(slot, tat, new) {
                    return true;
                }
            }
        }
        tries += 1;
    }
    let tat = load_u64(slot);
    match gcra::offer(tat, now, cost, depth) {
        Gcra::Deny => false,
        Gcra::Allow(new) => {
            if tat > now {
                fetch_add_u64(slot, cost);
            } else {
                store_u64(slot, new);
            }
            true
        }
    }
}

/// Backing store for 32-byte keys and values (`BucketKey`, `Bucket`).
#[repr(C, align(8))]
struct Words4 {
    w: [u64; 4],
}

const _: () =
    assert!(core::mem::size_of::<BucketKey>() <= 32 && core::mem::size_of::<Bucket>() <= 32);
