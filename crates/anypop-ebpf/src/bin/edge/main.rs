//! `edge`: the XDP program of a POP.
//!
//! parse → VIP? → service → rules (bitmap pre-selection, first match) → rate limit → Maglev /
//! flow table → IPIP encapsulation → FIB next hop → XDP_TX / XDP_REDIRECT.
//!
//! Every packet ends with exactly one [`Reason`], counted per CPU in packets and bytes. No path
//! returns XDP_ABORTED: a failure is a verdict like any other.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod atomic;
mod capture;

use anypop_common::{
    gcra::{self, Gcra},
    hash::flow_hash,
    layout::*,
    verdict::Reason,
};
use anypop_ebpf::{
    counters::add,
    csum,
    parse::{self, Packet, parse_packet},
    zero_words,
};
use atomic::{cas_u64, fetch_add_u64, load_u64, store_u64};
use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action, xdp_md},
    helpers::{
        bpf_fib_lookup as fib_lookup, bpf_get_smp_processor_id, bpf_jiffies64, bpf_ktime_get_ns,
        bpf_loop, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    macros::{map, xdp},
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};

anypop_ebpf::license!();

// ---- config maps (generation slot in key or index) ----
#[map]
static CONTROL: Array<Control> = Array::pinned(1, 0);
#[map]
static SETTINGS: Array<Settings> = Array::pinned(GENERATIONS, 0);
#[map]
static VIPS: HashMap<VipKey, u32> = HashMap::pinned(1024, 0);
#[map]
static SERVICES: HashMap<ServiceKey, u32> = HashMap::pinned(131_072, 0);
#[map]
static SVC4_TABLE: Array<[u64; SVC4_WAYS]> = Array::pinned(
    GENERATIONS * SVC4_BUCKETS,
    aya_ebpf::bindings::BPF_F_MMAPABLE,
);
#[map]
static SVC_INFO: Array<ServiceInfo> = Array::pinned(GENERATIONS * MAX_SERVICES, 0);
#[map]
static RULES: Array<RuleEntry> = Array::pinned(GENERATIONS * MAX_SERVICES * RULES_PER_SERVICE, 0);
#[map]
static SET_TBL: Array<u64> = Array::pinned(GENERATIONS * MAX_SERVICES * SET_CHUNKS * 256, 0);
#[map]
static SRC_V4: LpmTrie<LpmData4, u64> = LpmTrie::pinned(262_144, 0);
#[map]
static SRC4_DIR: Array<u64> =
    Array::pinned(GENERATIONS * DIR_WORDS, aya_ebpf::bindings::BPF_F_MMAPABLE);
#[map]
static SRC4_CLASS: Array<u64> = Array::pinned(GENERATIONS * CLASSES, 0);
#[map]
static SRC4_DECIDE: Array<u32> = Array::pinned(
    GENERATIONS * MAX_SERVICES * CLASSES,
    aya_ebpf::bindings::BPF_F_MMAPABLE,
);
#[map]
static SRC_V6: LpmTrie<LpmData6, u64> = LpmTrie::pinned(262_144, 0);
#[map]
static PROFILES: Array<Profile> = Array::pinned(GENERATIONS * MAX_PROFILES, 0);
#[map]
static BACKENDS: Array<Backend> = Array::pinned(GENERATIONS * MAX_BACKENDS, 0);
#[map]
static BE_SVC: HashMap<BackendServiceKey, u32> = HashMap::pinned(16_384, 0);
#[map]
static MAGLEV: Array<u32> = Array::pinned(
    GENERATIONS * MAX_SERVICES * MAGLEV_SIZE,
    aya_ebpf::bindings::BPF_F_MMAPABLE,
);
#[map]
static IFACES: HashMap<u32, IfaceInfo> = HashMap::pinned(64, 0);
#[map]
static FIB_CACHE: PerCpuArray<FibCacheEntry> = PerCpuArray::pinned(MAX_BACKENDS, 0);
#[map]
static TX_PORTS: DevMapHash = DevMapHash::pinned(64, 0);

// ---- state maps (stable keys; survive config generations and program upgrades) ----
#[map]
static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::pinned(1_000_000, 0);
#[map]
static BUCKETS: LruHashMap<BucketKey, Bucket> = LruHashMap::pinned(1_000_000, 0);
#[map]
static NEWSRC: Array<SourceWindow> = Array::pinned(1, 0);
/// Each CPU's copy of its recent IPv4 flows, in front of `FLOWS` (see [`FlowCacheBucket`]):
/// `FLOW_CACHE_BUCKETS` buckets per CPU, CPU by CPU (user space sizes it for the machine's
/// CPUs). A plain array indexed by CPU rather than a per-CPU array: its lookup is one address
/// computation, where a per-CPU array's goes through a table of per-element pointers (a second
/// cache miss). Not pinned: a new program starts with an empty cache and refills it from
/// `FLOWS`.
#[map]
static FLOW_CACHE: Array<FlowCacheBucket> = Array::with_max_entries(FLOW_CACHE_BUCKETS, 0);

// ---- counters ----
#[map]
static COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::pinned(anypop_common::verdict::REASON_SLOTS, 0);
#[map]
static RULE_HITS: PerCpuArray<Counter> = PerCpuArray::pinned(GENERATIONS * MAX_RULES_TOTAL, 0);
#[map]
static SVC_HITS: PerCpuArray<Counter> = PerCpuArray::pinned(GENERATIONS * MAX_SERVICES, 0);
#[map]
static BE_HITS: PerCpuArray<Counter> = PerCpuArray::pinned(GENERATIONS * MAX_BACKENDS, 0);

const AF_INET: u8 = 2;
const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_ICMP: u8 = 1;
const ICMP_ECHO_REQUEST: u8 = 8;
/// An ICMP error quotes the offending packet's IPv4 header (without options) and 8 bytes of
/// its payload: the ports and, for TCP, the sequence number the sender checks.
const ICMP_QUOTE: usize = 28;
/// The ICMP error's own IPv4 and ICMP headers.
const ICMP_HEADERS: usize = 28;

struct Verdict {
    action: u32,
    reason: Reason,
    /// Non-zero: the packet is too big to tunnel for an egress of this MTU; [`edge`] hands it
    /// to [`edge_too_big`], which counts it and decides whether it is answered.
    too_big_for: u32,
}

#[inline(always)]
const fn verdict(action: u32, reason: Reason) -> Verdict {
    Verdict {
        action,
        reason,
        too_big_for: 0,
    }
}

/// Too big to tunnel through an egress of MTU `mtu`: `drop_mtu`, unless [`edge`] answers it.
#[inline(always)]
const fn too_big(mtu: u32) -> Verdict {
    Verdict {
        action: xdp_action::XDP_DROP,
        reason: Reason::DropMtu,
        too_big_for: mtu,
    }
}

#[inline(always)]
const fn drop(reason: Reason) -> Verdict {
    verdict(xdp_action::XDP_DROP, reason)
}

#[inline(always)]
const fn pass(reason: Reason) -> Verdict {
    verdict(xdp_action::XDP_PASS, reason)
}

#[xdp]
pub fn edge(ctx: XdpContext) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let mut who = capture::Who::new();
    let v = run(&ctx, &mut who);
    if v.too_big_for != 0 {
        return edge_too_big(
            ctx.ctx,
            v.too_big_for,
            who.service,
            who.rule,
            who.generation,
        );
    }
    add(&COUNTERS, v.reason as u32, frame_len);
    capture::maybe_sample(&ctx, v.action, v.reason as u32, &who);
    v.action
}

#[inline(always)]
fn run(ctx: &XdpContext, who: &mut capture::Who) -> Verdict {
    let (generation, version) = match CONTROL.get(0) {
        Some(c) => (c.active_gen & 1, c.version),
        None => (0, 0),
    };
    who.generation = generation;
    let settings = match SETTINGS.get(generation) {
        Some(s) => s,
        None => return pass(Reason::PassNotVip),
    };
    // The packet summary lives in zeroed 8-byte words (see `zero_words`); all-zero bytes are a
    // valid `Packet` (numbers 0, flags false).
    let mut pkt_words = PacketWords { w: [0; 8] };
    zero_words(&mut pkt_words.w);
    let pkt = unsafe { &mut *(&mut pkt_words as *mut PacketWords as *mut Packet) };
    if let Err(r) = parse_packet(ctx, pkt) {
        return if r == Reason::PassNotIp {
            pass(r)
        } else {
            drop(r)
        };
    }

    // One lookup decides the common case: a service key exists only for a VIP, so a hit is both
    // "ours" and "which service". Only on a miss do we ask whether the destination is a VIP at
    // all (our own traffic passes; a VIP without that service drops).
    let mut svc = NONE;
    if !pkt.fragment && !pkt.malformed_l4 && pkt.family == FAMILY_V4 {
        let kind = svc4_kind(pkt.proto);
        if kind != 0 {
            if let Some(e) = svc4_find(generation, svc4_key(pkt.dst[0], pkt.dport, kind)) {
                svc = svc4_service(e);
            }
        }
    } else if !pkt.fragment && !pkt.malformed_l4 {
        let skey = ServiceKey {
            generation: generation as u8,
            family: pkt.family,
            proto: pkt.proto,
            _pad: 0,
            port: pkt.dport,
            _pad2: 0,
            addr: pkt.dst,
        };
        if let Some(s) = SERVICES.get_ptr(&skey) {
            svc = unsafe { *s };
        }
    }
    if svc == NONE {
        let is_vip = if pkt.family == FAMILY_V4 {
            svc4_find(generation, svc4_key(pkt.dst[0], 0, SVC4_KIND_VIP)).is_some()
        } else {
            let vip = VipKey {
                generation: generation as u8,
                family: pkt.family,
                _pad: [0; 2],
                addr: pkt.dst,
            };
            VIPS.get_ptr(&vip).is_some()
        };
        if !is_vip {
            return pass(Reason::PassNotVip);
        }
        if pkt.fragment {
            return if settings.frag_policy == FRAG_PASS {
                pass(Reason::PassFragment)
            } else {
                drop(Reason::DropFragment)
            };
        }
        if pkt.malformed_l4 {
            return drop(Reason::DropMalformed);
        }
        return drop(Reason::DropNoService);
    }
    let max_services = settings.max_services;
    if svc >= max_services {
        return drop(Reason::DropNoService);
    }
    let gs = generation * max_services + svc;
    who.service = svc;

    // ---- IPv4: what the rules decide for the source's class, computed in user space ----
    // Two array reads. A flood from a listed prefix ends here; a player that no rule can match
    // skips the rule walk below.
    let mut decision = DECIDE_WALK;
    if pkt.family == FAMILY_V4 {
        let class = source_class_v4(generation, pkt.src[0]);
        if class != CLASS_USE_LPM {
            if let Some(d) = SRC4_DECIDE.get(gs * CLASSES + class as u32) {
                decision = *d;
            }
        }
        if decide_is_deny(decision) {
            add(&SVC_HITS, gs, pkt.ip_len as u64);
            who.rule = decide_rule_index(decision);
            add(
                &RULE_HITS,
                generation * MAX_RULES_TOTAL + who.rule,
                pkt.ip_len as u64,
            );
            return drop(Reason::DropRule);
        }
    }

    let info = match SVC_INFO.get(gs) {
        Some(i) => i,
        None => return drop(Reason::DropNoService),
    };
    add(&SVC_HITS, gs, pkt.ip_len as u64);

    // ---- rules: first match decides ----
    let mut profile = info.profile;
    let slot = match decision {
        DECIDE_WALK if info.rule_count > 0 => first_matching_rule(generation, gs, info, pkt),
        DECIDE_WALK | DECIDE_NO_RULE => NONE,
        d => decide_slot(d),
    };
    if slot != NONE {
        if let Some(rule) = RULES.get(gs * RULES_PER_SERVICE + (slot & 63)) {
            who.rule = rule.rule_index & 1023;
            add(
                &RULE_HITS,
                generation * MAX_RULES_TOTAL + (rule.rule_index & 1023),
                pkt.ip_len as u64,
            );
            match rule.action {
                ACTION_DENY => return drop(Reason::DropRule),
                ACTION_ALLOW => profile = NONE,
                _ => profile = rule.profile,
            }
        }
    }

    // ---- per-source rate limit ----
    if profile != NONE {
        let r = rate_limit(generation, info.stable_id, profile, pkt, settings);
        if let Some(r) = Reason::from_u32(r) {
            return drop(r);
        }
    }

    if pkt.family != FAMILY_V4 {
        // IPv6 services are filtered and limited today; forwarding them comes later.
        return pass(Reason::PassV6Service);
    }
    if info.has_backends == 0 {
        return drop(Reason::DropNoBackend);
    }
    let (backend_addr, backend_index) =
        match pick_backend(generation, version, svc, gs, info.stable_id, pkt) {
            Some(b) => b,
            None => return drop(Reason::DropNoBackend),
        };
    let v = encapsulate(ctx, pkt, settings, backend_addr, backend_index);
    if v.reason == Reason::FwdIpip || v.reason == Reason::FwdIpipKernel {
        if backend_index != NONE {
            add(
                &BE_HITS,
                generation * MAX_BACKENDS + (backend_index & (MAX_BACKENDS - 1)),
                pkt.ip_len as u64,
            );
        }
    }
    v
}

/// Longest-prefix match of an IPv4 source whose /24 holds longer prefixes.
#[inline(always)]
fn source_sets_v4_lpm(generation: u32, pkt: &Packet) -> u64 {
    let mut k = LpmKeyWords { w: [0; 3] };
    // prefix_len (u32) | generation (u8) | address (4 bytes) | padding
    k.w[0] = (8 + 32) as u64
        | ((generation as u64 & 0xff) << 32)
        | ((pkt.src[0] as u64 & 0xff_ffff) << 40);
    k.w[1] = (pkt.src[0] >> 24) as u64;
    let key = &k as *const LpmKeyWords as *const Key<LpmData4>;
    match SRC_V4.get(unsafe { &*key }) {
        Some(v) => *v,
        None => 0,
    }
}

/// The `SVC4_TABLE` entry with this key, if any: at most two bucket reads (see
/// `anypop_common::layout::SVC4_BUCKET_BITS`), inlined by the verifier like every array read.
#[inline(always)]
fn svc4_find(generation: u32, key: u64) -> Option<u64> {
    let (b1, b2) = svc4_buckets(key);
    let base = generation << SVC4_BUCKET_BITS;
    for b in [b1, b2] {
        if let Some(bucket) = SVC4_TABLE.get(base | b) {
            for e in bucket.iter() {
                if svc4_entry_key(*e) == key {
                    return Some(*e);
                }
            }
        }
    }
    None
}

/// The DIR-24-8 class of an IPv4 source (network byte order): one array read.
#[inline(always)]
fn source_class_v4(generation: u32, src: u32) -> u64 {
    let slash24 = u32::from_be(src) >> 8;
    match SRC4_DIR.get((generation << DIR_WORDS_BITS) | dir_word(slash24)) {
        Some(w) => dir_class(*w, slash24),
        None => 0,
    }
}

/// Backing store for LPM keys (4-byte prefix length + data, at most 24 bytes).
#[repr(C, align(8))]
struct LpmKeyWords {
    w: [u64; 3],
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

/// The source-prefix dimension of the rules: one LPM lookup gives the prefix sets the source
/// belongs to, and at most 8 table reads turn those into the rules that name them.
#[inline(always)]
fn source_rules(generation: u32, gs: u32, pkt: &Packet) -> u64 {
    // IPv4: the DIR-24-8 array answers in two reads; the trie only for /24s that hold longer
    // prefixes. IPv6: the trie. (LPM keys are built in 8-byte-aligned words with explicit
    // stores: a byte array would be zeroed and filled by byte loops, BPF having no memset.)
    let sets = if pkt.family == FAMILY_V4 {
        let class = source_class_v4(generation, pkt.src[0]);
        if class == 0 {
            0
        } else if class != CLASS_USE_LPM {
            match SRC4_CLASS.get(generation * CLASSES + class as u32) {
                Some(v) => *v,
                None => 0,
            }
        } else {
            source_sets_v4_lpm(generation, pkt)
        }
    } else {
        let mut k = LpmKeyWords { w: [0; 3] };
        let b = &mut k as *mut LpmKeyWords as *mut u8;
        unsafe {
            core::ptr::write_unaligned(b as *mut u32, 8 + 128);
            *b.add(4) = generation as u8;
            core::ptr::write_unaligned(b.add(5) as *mut [u32; 4], pkt.src);
        }
        let key = &k as *const LpmKeyWords as *const Key<LpmData6>;
        match SRC_V6.get(unsafe { &*key }) {
            Some(v) => *v,
            None => 0,
        }
    };
    // Most networks have at most 8 prefix sets: one table read.
    if sets >> 8 == 0 {
        return match SET_TBL.get(set_table_index(gs, 0, sets as u32)) {
            Some(r) if sets != 0 => *r,
            _ => 0,
        };
    }
    let mut rules = 0u64;
    let mut chunk = 0u32;
    while chunk < SET_CHUNKS {
        let byte = ((sets >> (chunk * 8)) & 0xff) as u32;
        if byte != 0 {
            if let Some(r) = SET_TBL.get(set_table_index(gs, chunk, byte)) {
                rules |= *r;
            }
        }
        chunk += 1;
    }
    rules
}

#[inline(always)]
fn in_range16(v: u16, lo: u16, hi: u16) -> bool {
    v >= lo && v <= hi
}

#[inline(always)]
fn in_range8(v: u8, lo: u8, hi: u8) -> bool {
    v >= lo && v <= hi
}

/// First rule (in file order) whose every dimension matches. The bitmaps of the source and the
/// protocol dimensions pre-select candidates, so the loop usually ends at its first iteration.
/// Returns the rule's slot or [`NONE`]. Not inlined: its own stack frame.
#[inline(never)]
fn first_matching_rule(generation: u32, gs: u32, info: &ServiceInfo, pkt: &Packet) -> u32 {
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

/// Returns a drop reason (as `u32`) when the source is over its limit or blocked, else [`NONE`].
/// Not inlined: its own stack frame.
#[inline(never)]
fn rate_limit(
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

/// One IPv4 flow as the cache knows it: the whole key (so a hit is exact) and what `FLOWS`
/// holds for it.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlowCacheEntry {
    src: u32,
    /// Source port << 16 | destination port, as in the packet.
    ports: u32,
    service_id: u32,
    /// The IP protocol, with [`FLOW_CACHE_VALID`] set once the entry holds a flow.
    proto: u32,
    backend: u32,
    backend_index: u32,
    config_version: u32,
    _pad: u32,
}

const FLOW_CACHE_VALID: u32 = 0x100;

/// Two entries in one 64-byte cache line: a flow is looked for in both, and a new one enters
/// way 0 and pushes way 0's flow to way 1 (whatever was in way 1 leaves the cache, not
/// `FLOWS`).
///
/// Why a cache: `FLOWS` is a shared LRU hash of up to millions of flows; one lookup there (a
/// call into the kernel, a jhash of 28 bytes, a bucket and an element in a table of tens of
/// megabytes — cache and TLB misses — and the LRU's reference bit) cost about 190 ns of the
/// forward path's 440 ns per packet on the bench's 16,384 flows. This per-CPU array is read
/// without a helper call (the verifier inlines per-CPU array lookups), with an inline hash,
/// and one cache line. `FLOWS` stays the record of every flow: it is written whenever a flow
/// is created or confirmed under a new config, and read when the cache misses. RSS keeps a
/// flow on one CPU; a flow that arrives on another CPU finds its record in `FLOWS`.
/// What the cache costs: a busy flow served from the cache does not refresh its `FLOWS`
/// entry's recency, so when `FLOWS` is full its LRU may evict busy flows first; the cache
/// still holds them, and re-records them at the next config change.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlowCacheBucket {
    way: [FlowCacheEntry; 2],
}

/// The cache bucket of an IPv4 flow: multiply-shift over the key, computed inline.
#[inline(always)]
fn flow_cache_index(src: u32, ports: u32, service_id: u32, proto: u8) -> u32 {
    let k = ((src as u64) << 32 | ports as u64) ^ ((service_id as u64) << 8 | proto as u64);
    let h = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((h >> 32) as u32 ^ (h as u32)).wrapping_mul(0x85eb_ca6b) >> 17
}

const _: () = assert!(FLOW_CACHE_BUCKETS == 1 << (32 - 17));

/// Existing flows stay on their backend while it still serves the service (also draining at
/// weight 0); new flows go where the Maglev table says, identically on every POP.
/// The steady path (a flow this CPU saw since the last config change) is one [`FLOW_CACHE`]
/// read; everything else goes through `FLOWS` and then refreshes the cache.
/// Returns (backend address, backend index). Inlined, like the encapsulation below: the program
/// fits the 512-byte stack without separate BPF functions here, and each call and return costs
/// time on the forward path (more so on CPUs with return-thunk mitigations).
#[inline(always)]
fn pick_backend(
    generation: u32,
    version: u32,
    svc: u32,
    gs: u32,
    service_id: u32,
    pkt: &Packet,
) -> Option<(u32, u32)> {
    // ---- this CPU's cache ----
    let ports = ((pkt.sport as u32) << 16) | pkt.dport as u32;
    let tag = pkt.proto as u32 | FLOW_CACHE_VALID;
    let v4 = pkt.family == FAMILY_V4;
    let bucket = if v4 {
        let cpu = unsafe { bpf_get_smp_processor_id() };
        FLOW_CACHE.get_ptr_mut(
            cpu * FLOW_CACHE_BUCKETS + flow_cache_index(pkt.src[0], ports, service_id, pkt.proto),
        )
    } else {
        None
    };
    // The way holding this flow (2 = none), and what it says.
    let mut way = 2usize;
    let mut cached: Option<(u32, u32, u32)> = None;
    if let Some(b) = bucket {
        let b = unsafe { &*b };
        let mut w = 0;
        while w < 2 {
            let e = &b.way[w];
            if e.proto == tag
                && e.src == pkt.src[0]
                && e.ports == ports
                && e.service_id == service_id
            {
                if e.config_version == version {
                    return Some((e.backend, e.backend_index));
                }
                way = w;
                cached = Some((e.backend, e.backend_index, e.config_version));
                break;
            }
            w += 1;
        }
    }
    let (addr, index) =
        pick_backend_recorded(generation, version, svc, gs, service_id, pkt, cached)?;
    if let Some(b) = bucket {
        let b = unsafe { &mut *b };
        let fresh = FlowCacheEntry {
            src: pkt.src[0],
            ports,
            service_id,
            proto: tag,
            backend: addr,
            backend_index: index,
            config_version: version,
            _pad: 0,
        };
        if way < 2 {
            b.way[way & 1] = fresh;
        } else {
            b.way[1] = b.way[0];
            b.way[0] = fresh;
        }
    }
    Some((addr, index))
}

/// [`pick_backend`] beyond the cache: the flow's record in `FLOWS` (or what this CPU's cache
/// knew of it, `cached`: backend, index, config version), confirmed under the live config or
/// chosen anew by Maglev; `FLOWS` is updated with the answer.
#[inline(always)]
fn pick_backend_recorded(
    generation: u32,
    version: u32,
    svc: u32,
    gs: u32,
    service_id: u32,
    pkt: &Packet,
    cached: Option<(u32, u32, u32)>,
) -> Option<(u32, u32)> {
    let key = FlowKey {
        service_id,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
        src: pkt.src,
    };
    let recorded = FLOWS.get_ptr_mut(&key);
    let known = match (recorded, cached) {
        (Some(f), _) => Some(unsafe { ((*f).backend, (*f).backend_index, (*f).config_version) }),
        (None, c) => c,
    };
    if let Some((addr, index, checked)) = known {
        if checked == version {
            return Some((addr, index));
        }
        // The config changed since this flow was last confirmed: does its backend still serve
        // the service (draining at weight 0 counts)? Then stay; otherwise choose again.
        let bk = BackendServiceKey {
            generation,
            service: svc,
            addr,
        };
        if let Some(idx) = BE_SVC.get_ptr(&bk) {
            let idx = unsafe { *idx };
            match recorded {
                // Plain stores: two CPUs confirming the same flow write the same values.
                Some(f) => unsafe {
                    (*f).backend_index = idx;
                    (*f).config_version = version;
                },
                // `FLOWS` evicted it while this CPU's cache served it: record it again.
                None => {
                    let value = FlowValue {
                        backend: addr,
                        backend_index: idx,
                        config_version: version,
                        _pad: 0,
                        created_ns: 0,
                    };
                    let _ = FLOWS.insert(&key, &value, 0);
                }
            }
            return Some((addr, idx));
        }
    }
    let h = flow_hash(&pkt.src, &pkt.dst, pkt.sport, pkt.dport, pkt.proto);
    let slot = gs * MAGLEV_SIZE + h % MAGLEV_SIZE;
    let bi = *MAGLEV.get(slot)?;
    if bi == NONE {
        return None;
    }
    let be = BACKENDS.get(generation * MAX_BACKENDS + (bi & (MAX_BACKENDS - 1)))?;
    let value = FlowValue {
        backend: be.addr,
        backend_index: bi,
        config_version: version,
        _pad: 0,
        // Nothing reads a flow's age (the LRU evicts by use): no clock helper call per new flow.
        created_ns: 0,
    };
    let _ = FLOWS.insert(&key, &value, 0);
    Some((be.addr, bi))
}

/// Backing store for 32-byte keys and values (`BucketKey`, `Bucket`).
#[repr(C, align(8))]
struct Words4 {
    w: [u64; 4],
}

const _: () =
    assert!(core::mem::size_of::<BucketKey>() <= 32 && core::mem::size_of::<Bucket>() <= 32);

/// Backing store for [`Packet`].
#[repr(C, align(8))]
struct PacketWords {
    w: [u64; 8],
}

const _: () = assert!(core::mem::size_of::<Packet>() <= core::mem::size_of::<PacketWords>());

/// Backing store for `bpf_fib_lookup` (64 bytes), zeroed word by word.
#[repr(C, align(8))]
struct FibWords {
    w: [u64; 8],
}

/// Wraps the IPv4 packet in an outer IPv4 header (protocol 4) from the tunnel source to the
/// backend and sends it toward the FIB's next hop.
#[inline(always)]
fn encapsulate(
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

/// A packet too big to tunnel through an egress of MTU `egress_mtu`: counted, sampled for a
/// capture (as it arrived) and answered or dropped (see [`frag_needed_answerable`]); returns
/// the action. A global BPF function: the verifier checks it once, on its own, instead of once
/// for every state in which the program reaches it (inlined, it more than doubled the edge's
/// load time).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn edge_too_big(
    ctx: *mut xdp_md,
    egress_mtu: u32,
    service: u32,
    rule: u32,
    generation: u32,
) -> u32 {
    let ctx = XdpContext::new(ctx);
    let frame_len = (parse::data_end(&ctx) - parse::data(&ctx)) as u64;
    let l2 = frag_needed_answerable(&ctx, egress_mtu);
    let (action, reason) = match l2 {
        Some(_) => (xdp_action::XDP_TX, Reason::DropMtuIcmp),
        None => (xdp_action::XDP_DROP, Reason::DropMtu),
    };
    add(&COUNTERS, reason as u32, frame_len);
    let who = capture::Who {
        service,
        rule,
        generation,
    };
    capture::maybe_sample(&ctx, action, reason as u32, &who);
    match l2 {
        // Counted as answered: the resize cannot fail for a frame this big.
        Some(l2) => write_frag_needed(&ctx, l2, egress_mtu),
        None => action,
    }
}

/// The packet would exceed the egress MTU (`egress_mtu`) once encapsulated. A DF packet is
/// answered with ICMP "fragmentation needed" announcing the MTU left for it inside the tunnel,
/// so the player's path-MTU discovery (TCP above all) sends smaller packets instead of
/// retrying into a black hole; anything else is dropped (`drop_mtu`): XDP cannot fragment, and
/// ICMP errors are never answered with one (nor are packets with IP options, which the quote
/// would have to carry). Returns the length of the L2 header when the packet is answered.
/// Per-source rate limits have already applied, and the answer is smaller than the packet: no
/// amplification.
#[inline(always)]
fn frag_needed_answerable(ctx: &XdpContext, egress_mtu: u32) -> Option<usize> {
    let no = None;
    if !((IPV4_HLEN + 68) as u32..=0xffff).contains(&egress_mtu) {
        return no;
    }
    // The L2 header again (up to two VLAN tags): the parse's summary is not kept this far.
    let mut l2 = ETH_HLEN;
    let mut tag = 0;
    while tag < 2 {
        let t = match parse::words_at(ctx, l2 - 2, 1) {
            Some(p) => u16::from_be(parse::w(p, 0)),
            None => return no,
        };
        if t != 0x8100 && t != 0x88a8 {
            break;
        }
        l2 += 4;
        tag += 1;
    }
    // The quote: IPv4 header (no options) and 8 bytes.
    let q = match parse::words_at(ctx, l2, ICMP_QUOTE / 2) {
        Some(p) => p,
        None => return no,
    };
    let w0 = u16::from_be(parse::w(q, 0));
    let df = u16::from_be(parse::w(q, 3)) & 0x4000 != 0;
    let proto = u16::from_be(parse::w(q, 4)) as u8;
    let icmp_type = (u16::from_be(parse::w(q, 10)) >> 8) as u8;
    if w0 >> 8 != 0x45 || !df || (proto == IPPROTO_ICMP && icmp_type != ICMP_ECHO_REQUEST) {
        return no;
    }
    Some(l2)
}

/// Turns the frame into the answer [`frag_needed_answerable`] allowed (`l2`: its L2 header's
/// length) and returns the action: XDP_TX, or XDP_DROP if the frame cannot be resized. Built in
/// place, to leave the way the packet came, from the VIP to the player: the tail after the
/// quote is cut, the L2 header (with its VLAN tags) moves 28 bytes to the front, and our IPv4 +
/// ICMP headers fill the gap before the quote, which stays where it was.
#[inline(always)]
fn write_frag_needed(ctx: &XdpContext, l2: usize, egress_mtu: u32) -> u32 {
    let fail = xdp_action::XDP_DROP;
    if l2 > 22 {
        return fail;
    }
    let (player, vip) = match parse::words_at(ctx, l2, ICMP_QUOTE / 2) {
        Some(q) => (parse::w32(q, 6), parse::w32(q, 8)),
        None => return fail,
    };
    let start = parse::data(ctx);
    let end = parse::data_end(ctx);
    let cut = (l2 + ICMP_QUOTE) as i32 - (end - start) as i32;
    if cut < 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, cut) } != 0 {
        return fail;
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ICMP_HEADERS as i32)) } != 0 {
        return fail;
    }
    // The old L2 header is now at [28, 28 + l2). Its 22-byte window is copied to the front
    // whatever `l2` is (no branch per word for the verifier to follow): what lands beyond `l2`
    // is overwritten by our headers below. The frame holds at least 14 + 56 bytes.
    let start = parse::data(ctx);
    let end = parse::data_end(ctx);
    if start + ICMP_HEADERS + 22 > end {
        return fail;
    }
    let old = (start + ICMP_HEADERS) as *const u16;
    let mut l2_words = [0u16; 11];
    let mut i = 0;
    while i < 11 {
        l2_words[i] = unsafe { core::ptr::read(old.add(i)) };
        i += 1;
    }
    // Back to the sender: its MAC becomes the destination, ours the source.
    l2_words.swap(0, 3);
    l2_words.swap(1, 4);
    l2_words.swap(2, 5);
    let new = start as *mut u16;
    let mut i = 0;
    while i < 11 {
        unsafe { core::ptr::write(new.add(i), l2_words[i]) };
        i += 1;
    }
    let hdrs = match parse::words_at(ctx, l2, (ICMP_HEADERS + ICMP_QUOTE) / 2) {
        Some(p) => p as *mut u16,
        None => return fail,
    };
    unsafe {
        let ip: [u16; 10] = [
            u16::from_be(0x45c0),
            u16::from_be((IPV4_HLEN + 8 + ICMP_QUOTE) as u16),
            0,
            0,
            u16::from_be((64 << 8) | IPPROTO_ICMP as u16),
            0,
            (vip & 0xffff) as u16,
            (vip >> 16) as u16,
            (player & 0xffff) as u16,
            (player >> 16) as u16,
        ];
        let mut sum = 0u32;
        let mut i = 0;
        while i < 10 {
            sum += ip[i] as u32;
            core::ptr::write(hdrs.add(i), ip[i]);
            i += 1;
        }
        core::ptr::write(hdrs.add(5), csum::checksum(sum));
        // Type 3 (destination unreachable), code 4 (fragmentation needed), the next-hop MTU.
        let icmp: [u16; 4] = [
            u16::from_be(0x0304),
            0,
            0,
            u16::from_be((egress_mtu - IPV4_HLEN as u32) as u16),
        ];
        let mut sum = 0u32;
        let mut i = 0;
        while i < 4 {
            sum += icmp[i] as u32;
            core::ptr::write(hdrs.add(10 + i), icmp[i]);
            i += 1;
        }
        let mut i = 0;
        while i < ICMP_QUOTE / 2 {
            sum += core::ptr::read(hdrs.add(14 + i)) as u32;
            i += 1;
        }
        core::ptr::write(hdrs.add(11), csum::checksum(sum));
    }
    xdp_action::XDP_TX
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
