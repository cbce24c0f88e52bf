//! Steps 3 and 4 of the walk: which service a packet is for — one lookup that also says "ours"
//! — and, only on a miss, whether its destination is one of our VIPs at all.
use anypop_common::{layout::*, verdict::Reason};
use anypop_ebpf::parse::Packet;

use crate::{
    maps::{SERVICES, SVC4_TABLE, VIPS},
    verdict::{Verdict, drop, pass},
};

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

/// The packet's service index (below `settings.max_services`), or the verdict of a packet
/// that has none. One lookup decides the common case: a service key exists only for a VIP, so
/// a hit is both "ours" and "which service". Only on a miss do we ask whether the destination is
/// a VIP at all (our own traffic passes; a VIP without that service drops). Fragments and
/// malformed packets are never looked up, so they always get here.
#[inline(always)]
pub fn lookup(generation: u32, settings: &Settings, pkt: &Packet) -> Result<u32, Verdict> {
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
            return Err(pass(Reason::PassNotVip));
        }
        if pkt.fragment {
            return Err(if settings.frag_policy == FRAG_PASS {
                pass(Reason::PassFragment)
            } else {
                drop(Reason::DropFragment)
            });
        }
        if pkt.malformed_l4 {
            return Err(drop(Reason::DropMalformed));
        }
        return Err(drop(Reason::DropNoService));
    }
    Ok(svc)
}
