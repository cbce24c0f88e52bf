//! Step 6, the rules: first match in file order, at most [`RULES_PER_SERVICE`] per service,
//! found by a bitmap pre-selection (protocol class, source prefix sets) and a walk over the
//! candidates.
use anypop_common::layout::*;
use anypop_ebpf::parse::Packet;
use aya_ebpf::helpers::bpf_loop;

use crate::{
    maps::{RULES, SRC4_DECIDE},
    sources::{source_class_v4, source_rules},
};

/// What the rules decide for an IPv4 source, by its DIR-24-8 class (`SRC4_DECIDE`, computed in
/// user space: see [`DECIDE_WALK`]): two array reads. A source whose /24 needs the LPM trie
/// walks.
#[inline(always)]
pub fn source_decision(generation: u32, gs: u32, pkt: &Packet) -> u32 {
    let mut decision = DECIDE_WALK;
    let class = source_class_v4(generation, pkt.src[0]);
    if class != CLASS_USE_LPM {
        if let Some(d) = SRC4_DECIDE.get(gs * CLASSES + class as u32) {
            decision = *d;
        }
    }
    decision
}

/// First rule (in file order) whose every dimension matches. The bitmaps of the source and the
/// protocol dimensions pre-select candidates, so the loop usually ends at its first iteration.
/// Returns the rule's slot or [`NONE`]. Not inlined: its own stack frame.
#[inline(never)]
pub fn first_matching_rule(generation: u32, gs: u32, info: &ServiceInfo, pkt: &Packet) -> u32 {
    let used = if info.rule_count >= 64 {
        u64::MAX
    } else {
        (1u64 << info.rule_count) - 1
    };
    let class = proto_class(pkt.proto) as usize;
    let mut candidates = info.proto_rules[class & 3] & used;
    if candidates == 0 {
        return NONE;
    }
    // Only rules with a source constraint need the prefix lookup.
    let src_needed = candidates & !info.any_src_rules;
    let mut src_ok = info.any_src_rules;
    if src_needed != 0 {
        src_ok |= source_rules(generation, gs, pkt);
    }
    candidates &= src_ok;
    let mut walk = RuleWalk {
        candidates,
        base: gs * RULES_PER_SERVICE,
        found: NONE,
        proto: pkt.proto,
        tcp_flags: pkt.tcp_flags,
        ttl: pkt.ttl,
        icmp_type: pkt.icmp_type,
        sport: pkt.sport,
        dport: pkt.dport,
        ip_len: pkt.ip_len,
        _pad: 0,
    };
    // The first candidate usually decides (a listed flood source; a rule aimed at this traffic):
    // check it here, and pay for the loop helper only when it does not match.
    if step(&mut walk) == 1 || walk.candidates == 0 {
        return walk.found;
    }
    // bpf_loop: the verifier checks the body once instead of once per possible iteration (an
    // unrolled 64-step walk with this many branches exceeds its one-million-instruction budget).
    unsafe {
        bpf_loop(
            RULES_PER_SERVICE,
            rule_step as *mut core::ffi::c_void,
            &mut walk as *mut RuleWalk as *mut core::ffi::c_void,
            0,
        );
    }
    walk.found
}

/// State of the rule walk, shared with the `bpf_loop` callback.
#[repr(C)]
struct RuleWalk {
    candidates: u64,
    base: u32,
    found: u32,
    proto: u8,
    tcp_flags: u8,
    ttl: u8,
    icmp_type: u8,
    sport: u16,
    dport: u16,
    ip_len: u16,
    _pad: u16,
}

/// One step: the lowest candidate slot is checked in full; 1 stops the loop.
extern "C" fn rule_step(_index: u64, walk: *mut RuleWalk) -> i64 {
    step(unsafe { &mut *walk })
}

/// The body of [`rule_step`], inlined where the first candidate is checked directly.
#[inline(always)]
fn step(w: &mut RuleWalk) -> i64 {
    if w.candidates == 0 {
        return 1;
    }
    let slot = ctz64(w.candidates);
    w.candidates &= w.candidates - 1;
    if let Some(r) = RULES.get(w.base + (slot & 63)) {
        if rule_matches(r, w) {
            w.found = slot;
            return 1;
        }
    }
    0
}

#[inline(always)]
fn rule_matches(r: &RuleEntry, pkt: &RuleWalk) -> bool {
    let f = r.flags;
    if f & RF_DPORT != 0 && !in_range16(pkt.dport, r.dport_lo, r.dport_hi) {
        return false;
    }
    if f & RF_SPORT != 0 && !in_range16(pkt.sport, r.sport_lo, r.sport_hi) {
        return false;
    }
    if f & RF_LEN != 0 && !in_range16(pkt.ip_len, r.len_lo, r.len_hi) {
        return false;
    }
    if f & RF_TTL != 0 && !in_range8(pkt.ttl, r.ttl_lo, r.ttl_hi) {
        return false;
    }
    if f & RF_TCP_FLAGS != 0
        && (pkt.proto != PROTO_TCP || pkt.tcp_flags & r.tcp_flags_mask != r.tcp_flags_value)
    {
        return false;
    }
    if f & RF_ICMP_TYPE != 0
        && (!(pkt.proto == PROTO_ICMP || pkt.proto == PROTO_ICMPV6)
            || !in_range8(pkt.icmp_type, r.icmp_type_lo, r.icmp_type_hi))
    {
        return false;
    }
    true
}

/// Count of trailing zero bits by binary search: BPF has no ctz instruction and this keeps the
/// code free of lookup tables.
#[inline(always)]
fn ctz64(mut x: u64) -> u32 {
    let mut n = 0;
    if x & 0xffff_ffff == 0 {
        n += 32;
        x >>= 32;
    }
    if x & 0xffff == 0 {
        n += 16;
        x >>= 16;
    }
    if x & 0xff == 0 {
        n += 8;
        x >>= 8;
    }
    if x & 0xf == 0 {
        n += 4;
        x >>= 4;
    }
    if x & 0x3 == 0 {
        n += 2;
        x >>= 2;
    }
    if x & 0x1 == 0 {
        n += 1;
    }
    n
}

#[inline(always)]
fn in_range16(v: u16, lo: u16, hi: u16) -> bool {
    v >= lo && v <= hi
}

#[inline(always)]
fn in_range8(v: u8, lo: u8, hi: u8) -> bool {
    v >= lo && v <= hi
}
