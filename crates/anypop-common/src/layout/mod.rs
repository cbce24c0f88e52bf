//! Map keys, values and limits shared by the kernel programs and the user space that fills them.
//!
//! Config maps carry a *generation slot* (0 or 1) in their keys or index: user space writes a whole
//! new config into the slot that is not live, then flips [`Control::active_gen`] in one 4-byte store
//! — the atomic switch of the design. State maps (buckets, flows) are keyed by stable ids and never
//! carry a slot, so they survive config changes.
//!
//! Every struct is `#[repr(C)]` with explicit padding so its bytes are fully defined (required for
//! hashing keys in the kernel and for `aya::Pod`).
//!
//! The limits and protocol numbers live here; the types by subject in submodules, all re-exported
//! so every `layout::X` path stays one path: `config` (edge config maps), `svc4` (the packed IPv4
//! service table), `rules` (rule entries, source classes and decisions), `state` (flows, buckets,
//! counters, caches), `backend` (backend maps) and `capture`.

/// Layout version; part of the pin path so an incompatible daemon never touches these maps.
pub const LAYOUT_VERSION: u32 = 2;

/// Rules a single service can have (one bit each in a `u64` bitmap).
pub const RULES_PER_SERVICE: u32 = 64;
/// Rules in a whole network file.
pub const MAX_RULES_TOTAL: u32 = 1024;
/// Distinct source-prefix sets (one bit each in the LPM value).
pub const MAX_PREFIX_SETS: u32 = 64;
/// Bytes of a prefix-set bitmap; the set→rule table has one 256-entry block per byte.
pub const SET_CHUNKS: u32 = 8;
/// Services per config generation (default map sizing; user space may lower it).
pub const MAX_SERVICES: u32 = 64;
/// Backends per config generation.
pub const MAX_BACKENDS: u32 = 256;
/// Rate-limit profiles per config generation (service defaults + named profiles).
pub const MAX_PROFILES: u32 = 256;
/// Maglev table size per service: a prime, ≥ 100× the backends a service realistically has.
pub const MAGLEV_SIZE: u32 = 65_537;
/// Generation slots.
pub const GENERATIONS: u32 = 2;

/// "No profile" / "no backend" marker.
pub const NONE: u32 = u32::MAX;

/// Address families as stored in keys.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Protocol classes for rule matching (bit positions in [`RuleEntry::proto_mask`]).
pub const PCLASS_TCP: u8 = 0;
pub const PCLASS_UDP: u8 = 1;
pub const PCLASS_ICMP: u8 = 2;
pub const PCLASS_OTHER: u8 = 3;
pub const PCLASS_COUNT: usize = 4;

/// Maps an IP protocol number to its class (ICMP and ICMPv6 share one).
#[inline(always)]
pub const fn proto_class(proto: u8) -> u8 {
    match proto {
        PROTO_TCP => PCLASS_TCP,
        PROTO_UDP => PCLASS_UDP,
        PROTO_ICMP | PROTO_ICMPV6 => PCLASS_ICMP,
        _ => PCLASS_OTHER,
    }
}

mod backend;
mod capture;
mod config;
mod rules;
mod state;
mod svc4;

pub use backend::*;
pub use capture::*;
pub use config::*;
pub use rules::*;
pub use state::*;
pub use svc4::*;

/// The size of every shared type, checked at compile time: the kernel programs and user space
/// (and pinned maps from an earlier daemon) must agree byte for byte, so a change here is a
/// layout change that needs [`LAYOUT_VERSION`] bumped, never an accident of moving code.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<Control>() == 8);
    assert!(size_of::<Settings>() == 32);
    assert!(size_of::<VipKey>() == 20);
    assert!(size_of::<ServiceKey>() == 24);
    assert!(size_of::<VipKey4>() == 8);
    assert!(size_of::<ServiceKey4>() == 8);
    assert!(size_of::<ServiceInfo>() == 16 + 8 + 8 * PCLASS_COUNT);
    assert!(size_of::<RuleEntry>() == 32);
    assert!(size_of::<Profile>() == 40);
    assert!(size_of::<Backend>() == 8);
    assert!(size_of::<BackendServiceKey>() == 12);
    assert!(size_of::<FlowKey>() == 28);
    assert!(size_of::<FlowValue>() == 24);
    assert!(size_of::<BucketKey>() == 28);
    assert!(size_of::<Bucket>() == 24);
    assert!(size_of::<SourceWindow>() == 16);
    assert!(size_of::<Counter>() == 16);
    assert!(size_of::<IfaceInfo>() == 8);
    assert!(size_of::<FibCacheEntry>() == 40);
    assert!(size_of::<BackendSettings>() == 8);
    assert!(size_of::<ReplyKey>() == 12);
    assert!(size_of::<CaptureConfig>() == 16);
    assert!(size_of::<CaptureWindow>() == 16);
    assert!(size_of::<CaptureRecord>() == 32 + CAPTURE_SNAPLEN as usize);
};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    macro_rules! pod {
        ($($t:ty),*) => { $( unsafe impl aya::Pod for $t {} )* };
    }
    pod!(
        CaptureConfig,
        CaptureWindow,
        CaptureRecord,
        Control,
        Settings,
        VipKey,
        VipKey4,
        ServiceKey,
        ServiceKey4,
        ServiceInfo,
        RuleEntry,
        Profile,
        Backend,
        BackendServiceKey,
        FlowKey,
        FlowValue,
        BucketKey,
        Bucket,
        SourceWindow,
        Counter,
        IfaceInfo,
        FibCacheEntry,
        BackendSettings,
        ReplyKey
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<VipKey>(), 20);
        assert_eq!(size_of::<ServiceKey>(), 24);
        assert_eq!(size_of::<ServiceKey4>(), 8);
        assert_eq!(size_of::<VipKey4>(), 8);
        assert_eq!(size_of::<ServiceInfo>(), 16 + 8 + 8 * PCLASS_COUNT);
        assert_eq!(size_of::<RuleEntry>(), 32);
        assert_eq!(size_of::<FlowKey>(), 28);
        assert_eq!(size_of::<BucketKey>(), 28);
        assert_eq!(size_of::<Settings>(), 32);
        assert_eq!(size_of::<Profile>(), 40);
        assert_eq!(size_of::<CaptureConfig>(), 16);
        assert_eq!(size_of::<CaptureRecord>(), 32 + CAPTURE_SNAPLEN as usize);
    }

    #[test]
    fn svc4_entries_round_trip() {
        let addr = u32::from_ne_bytes([203, 0, 113, 10]);
        for (port, kind) in [
            (27015, SVC4_KIND_UDP),
            (443, SVC4_KIND_TCP),
            (0, SVC4_KIND_ICMP),
            (0, SVC4_KIND_VIP),
            (u16::MAX, SVC4_KIND_UDP),
        ] {
            let key = svc4_key(addr, port, kind);
            for service in [0, 1, 63, 4095] {
                let e = svc4_entry(key, service);
                assert_eq!(svc4_service(e), service);
                assert_eq!(svc4_entry_key(e), key);
                assert_ne!(e, 0, "an entry is never an empty place");
            }
        }
        // The service index never leaks into the key, nor the key into the index.
        let key = svc4_key(u32::MAX, u16::MAX, SVC4_KIND_VIP);
        assert_eq!(svc4_service(svc4_entry(key, 0)), 0);
        assert_eq!(svc4_entry_key(svc4_entry(0, 4095)), 0);
    }

    #[test]
    fn decisions_round_trip() {
        for slot in [0, 1, 17, RULES_PER_SERVICE - 1] {
            for rule_index in [0, 1, 500, MAX_RULES_TOTAL - 1] {
                for deny in [false, true] {
                    let d = decide_rule(slot, deny, rule_index);
                    assert_ne!(d, DECIDE_WALK);
                    assert_ne!(d, DECIDE_NO_RULE);
                    assert_eq!(decide_slot(d), slot);
                    assert_eq!(decide_is_deny(d), deny);
                    assert_eq!(decide_rule_index(d), rule_index);
                }
            }
        }
        assert!(!decide_is_deny(DECIDE_WALK));
        assert!(!decide_is_deny(DECIDE_NO_RULE));
    }

    #[test]
    fn dir_classes_round_trip() {
        // Every /24 of one word, written in turn, keeps its own byte and leaves the others.
        let mut word = 0u64;
        let base = (0x0a01_0200u32 >> 8) & !7;
        for i in 0..8 {
            word = dir_with_class(word, base + i, 10 + i as u64);
        }
        for i in 0..8 {
            assert_eq!(dir_word(base + i), dir_word(base));
            assert_eq!(dir_class(word, base + i), 10 + i as u64);
        }
        word = dir_with_class(word, base + 3, CLASS_USE_LPM);
        assert_eq!(dir_class(word, base + 3), CLASS_USE_LPM);
        assert_eq!(dir_class(word, base + 2), 12);
        assert_eq!(dir_class(word, base + 4), 14);
        // Word index: one word per 8 consecutive /24s, DIR_WORDS of them.
        assert_eq!(dir_word(u32::MAX >> 8), DIR_WORDS - 1);
        assert_eq!(dir_word(0x0a01_0203 >> 8), 0x0a01_0203 >> 11);
    }

    #[test]
    fn proto_classes() {
        assert_eq!(proto_class(PROTO_TCP), PCLASS_TCP);
        assert_eq!(proto_class(PROTO_ICMPV6), PCLASS_ICMP);
        assert_eq!(proto_class(47), PCLASS_OTHER);
    }
}
