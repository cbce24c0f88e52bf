//! Step 9, the backend: this CPU's flow cache, the `FLOWS` record, Maglev for new flows.
use anypop_common::{hash::flow_hash, layout::*};
use anypop_ebpf::parse::Packet;
use aya_ebpf::helpers::bpf_get_smp_processor_id;

use crate::maps::{BACKENDS, BE_SVC, FLOW_CACHE, FLOWS, MAGLEV};

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
pub struct FlowCacheBucket {
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
pub fn pick_backend(
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
