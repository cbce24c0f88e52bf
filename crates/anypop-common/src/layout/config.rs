//! Edge config maps: the live-slot switch, node settings, VIP and service keys, per-service
//! info, rate-limit profiles and backends. Everything here is written per generation slot.

use super::PCLASS_COUNT;

/// Singleton in `CONTROL`: which generation is live.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// 0 or 1.
    pub active_gen: u32,
    /// Bumped on every switch; user space shows it next to the config hash.
    pub version: u32,
}

/// Fragment policy values in [`Settings::frag_policy`].
pub const FRAG_DROP: u32 = 0;
pub const FRAG_PASS: u32 = 1;

/// Per-generation node settings, `SETTINGS[gen]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Outer source of IPIP packets, network byte order.
    pub tunnel_source: u32,
    /// [`FRAG_DROP`] or [`FRAG_PASS`].
    pub frag_policy: u32,
    /// New sources per second allowed into the rate limiter (0 = unlimited).
    pub new_source_cap: u32,
    /// Services the maps were sized for (index stride of the per-service arrays).
    pub max_services: u32,
    /// TTL of the outer header.
    pub outer_ttl: u32,
    pub _pad: u32,
    /// Hash of the network file this generation was compiled from (for `status`; the program
    /// does not read it).
    pub config_hash: u64,
}

/// An address as key words: see [`VipKey::addr`].
pub fn addr_words(bytes: &[u8]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, c) in bytes.chunks(4).take(4).enumerate() {
        let mut b = [0u8; 4];
        b[..c.len()].copy_from_slice(c);
        w[i] = u32::from_ne_bytes(b);
    }
    w
}

/// Key of `VIPS`: is this destination one of our anycast addresses?
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub generation: u8,
    pub family: u8,
    pub _pad: [u8; 2],
    /// 32-bit words in network byte order (`u32::from_ne_bytes` of each 4 bytes); IPv4 uses
    /// the first word, the rest stay zero. Words, not bytes: the program fills keys with four
    /// register stores instead of a byte-wise copy.
    pub addr: [u32; 4],
}

/// Key of `SERVICES`: VIP + protocol + destination port → service index.
/// Port ranges are expanded to one entry per port (a hash hit is O(1) whatever the ranges).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub generation: u8,
    pub family: u8,
    pub proto: u8,
    pub _pad: u8,
    /// Host byte order. 0 for ICMP services.
    pub port: u16,
    pub _pad2: u16,
    /// As in [`VipKey::addr`].
    pub addr: [u32; 4],
}

/// An IPv4 VIP of a generation, as compiled (it becomes a [`SVC4_KIND_VIP`](super::SVC4_KIND_VIP) entry of
/// `SVC4_TABLE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey4 {
    /// Network byte order (as read from the packet).
    pub addr: u32,
    pub generation: u32,
}

/// The IPv4 form of [`ServiceKey`] in 8 bytes: an entry of the edge's `SVC4_TABLE` once compiled,
/// and the key of the backend's `B_SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey4 {
    /// Network byte order.
    pub addr: u32,
    /// Host byte order; 0 for ICMP.
    pub port: u16,
    pub proto: u8,
    pub generation: u8,
}

/// `SVC_INFO[gen * max_services + index]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// [`crate::hash::stable_id`] of the name: keys flows and buckets.
    pub stable_id: u32,
    /// Default rate-limit profile index in `PROFILES` for this generation, or [`NONE`](super::NONE).
    pub profile: u32,
    /// Rules in use (slots 0..rule_count).
    pub rule_count: u32,
    /// 1 when at least one backend has a weight above zero.
    pub has_backends: u32,
    /// Rules with no source constraint (they match every source).
    pub any_src_rules: u64,
    /// Rules that accept each protocol class, indexed by `PCLASS_*`.
    pub proto_rules: [u64; PCLASS_COUNT],
}

/// Profile flags.
pub const PF_PPS: u32 = 1 << 0;
pub const PF_BPS: u32 = 1 << 1;

/// `PROFILES[gen * MAX_PROFILES + index]`: a rate limit as GCRA parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// [`crate::hash::stable_id`] of the profile's name (keys buckets).
    pub stable_id: u32,
    pub flags: u32,
    /// ns per packet.
    pub packet_cost_ns: u64,
    /// ns per byte, fixed point ([`crate::gcra::BYTE_COST_SHIFT`]).
    pub byte_cost_fixed: u64,
    /// Bucket depth in ns (burst seconds × 1e9), the same for both limits.
    pub depth_ns: u64,
    /// Block time after a violation, 0 for none.
    pub block_ns: u64,
}

/// `BACKENDS[gen * MAX_BACKENDS + index]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// IPv4 address, network byte order.
    pub addr: u32,
    pub weight: u32,
}

/// Key of `BE_SVC`: is this backend (by address) still serving this service in this generation?
/// Flows pinned to a backend stay on it while this holds (also at weight 0: draining).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendServiceKey {
    pub generation: u32,
    pub service: u32,
    pub addr: u32,
}
