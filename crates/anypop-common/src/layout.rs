//! Map keys, values and limits shared by the kernel programs and the user space that fills them.
//!
//! Config maps carry a *generation slot* (0 or 1) in their keys or index: user space writes a whole
//! new config into the slot that is not live, then flips [`Control::active_gen`] in one 4-byte store
//! — the atomic switch of the design. State maps (buckets, flows) are keyed by stable ids and never
//! carry a slot, so they survive config changes.
//!
//! Every struct is `#[repr(C)]` with explicit padding so its bytes are fully defined (required for
//! hashing keys in the kernel and for `aya::Pod`).

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

/// An IPv4 VIP of a generation, as compiled (it becomes a [`SVC4_KIND_VIP`] entry of
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

/// IPv4 services and VIPs of a generation in one array, `SVC4_TABLE[gen × SVC4_BUCKETS +
/// bucket]`, read by the program without a helper call (a hash-map lookup is a call into the
/// kernel, and this lookup is on every packet's path). Bucketized cuckoo hashing: each entry lives
/// in one of the two buckets its key hashes to ([`svc4_buckets`]), 4 entries to a bucket, so a
/// lookup reads at most two 32-byte buckets; user space places the entries. 262,144 places for at
/// most 131,072 service ports and 1,024 VIPs: at half load, placement does not fail in practice.
pub const SVC4_BUCKET_BITS: u32 = 16;
/// Buckets per generation.
pub const SVC4_BUCKETS: u32 = 1 << SVC4_BUCKET_BITS;
/// Entries per bucket.
pub const SVC4_WAYS: usize = 4;
/// An entry (`u64`): bit 63 set (0 = empty), kind in bits 60..63, service index in bits 48..60,
/// port (host order) in bits 32..48, address (network order, as read from the packet) in bits
/// 0..32. The key is everything but the service index.
pub const SVC4_KEY_MASK: u64 = !(0xfff << 48);
/// Service index bits of an entry.
pub const SVC4_SERVICE_SHIFT: u32 = 48;
/// Entry kinds: a service per protocol, or "this address is a VIP" (port 0).
pub const SVC4_KIND_TCP: u64 = 1;
pub const SVC4_KIND_UDP: u64 = 2;
pub const SVC4_KIND_ICMP: u64 = 3;
pub const SVC4_KIND_VIP: u64 = 4;

/// The entry kind of a service protocol; 0 for a protocol no service can have.
#[inline(always)]
pub const fn svc4_kind(proto: u8) -> u64 {
    match proto {
        PROTO_TCP => SVC4_KIND_TCP,
        PROTO_UDP => SVC4_KIND_UDP,
        PROTO_ICMP => SVC4_KIND_ICMP,
        _ => 0,
    }
}

/// The key of an entry: `addr` in network order, `port` in host order (0 for ICMP and VIPs).
#[inline(always)]
pub const fn svc4_key(addr: u32, port: u16, kind: u64) -> u64 {
    (1 << 63) | (kind << 60) | ((port as u64) << 32) | addr as u64
}

/// An entry: `key` (from [`svc4_key`]) holding service index `service` (0..4096; VIP entries
/// hold 0).
#[inline(always)]
pub const fn svc4_entry(key: u64, service: u32) -> u64 {
    key | ((service as u64 & 0xfff) << SVC4_SERVICE_SHIFT)
}

/// The key of an entry (everything but the service index), as [`svc4_key`] built it.
#[inline(always)]
pub const fn svc4_entry_key(entry: u64) -> u64 {
    entry & SVC4_KEY_MASK
}

/// The service index of an entry.
#[inline(always)]
pub const fn svc4_service(entry: u64) -> u32 {
    ((entry >> SVC4_SERVICE_SHIFT) & 0xfff) as u32
}

/// The two buckets of a key: multiply-shift hashes with two fixed odd constants.
#[inline(always)]
pub const fn svc4_buckets(key: u64) -> (u32, u32) {
    (
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SVC4_BUCKET_BITS)) as u32,
        (key.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) >> (64 - SVC4_BUCKET_BITS)) as u32,
    )
}

/// `SVC_INFO[gen * max_services + index]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// [`crate::hash::stable_id`] of the name: keys flows and buckets.
    pub stable_id: u32,
    /// Default rate-limit profile index in `PROFILES` for this generation, or [`NONE`].
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

/// Rule actions.
pub const ACTION_DENY: u8 = 0;
/// Allow and skip rate limits (trusted sources).
pub const ACTION_ALLOW: u8 = 1;
/// Apply the rate-limit profile named by the rule.
pub const ACTION_LIMIT: u8 = 2;

/// Rule flags: which optional dimensions the rule checks.
pub const RF_SPORT: u16 = 1 << 0;
pub const RF_DPORT: u16 = 1 << 1;
pub const RF_LEN: u16 = 1 << 2;
pub const RF_TTL: u16 = 1 << 3;
pub const RF_ICMP_TYPE: u16 = 1 << 4;
pub const RF_TCP_FLAGS: u16 = 1 << 5;

/// `RULES[(gen * max_services + service) * RULES_PER_SERVICE + slot]`: the checks that are not
/// part of the bitmap pre-selection (source prefix and protocol are).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleEntry {
    /// Index of the rule in the network file (for hit counters).
    pub rule_index: u32,
    /// Profile index for [`ACTION_LIMIT`].
    pub profile: u32,
    pub flags: u16,
    pub action: u8,
    /// TCP flags that must be set/clear: `(flags & mask) == value`.
    pub tcp_flags_mask: u8,
    pub tcp_flags_value: u8,
    pub ttl_lo: u8,
    pub ttl_hi: u8,
    pub icmp_type_lo: u8,
    pub icmp_type_hi: u8,
    pub _pad: u8,
    pub sport_lo: u16,
    pub sport_hi: u16,
    pub dport_lo: u16,
    pub dport_hi: u16,
    /// Bounds on the IP packet length (IPv4 total length, IPv6 40 + payload length).
    pub len_lo: u16,
    pub len_hi: u16,
}

/// IPv4 source classification, DIR-24-8 style: one array word per 8 consecutive /24s, one byte
/// per /24 holding a *class* (0 = no listed prefix covers it; 1..=254 = index into
/// `SRC4_CLASS`, the prefix-set bitmap; [`CLASS_USE_LPM`] = prefixes longer than /24 exist inside,
/// ask the LPM trie). Two array reads, inlined by the verifier, whatever the number of prefixes.
pub const DIR_WORDS_BITS: u32 = 21;
/// Words per generation in `SRC4_DIR`.
pub const DIR_WORDS: u32 = 1 << DIR_WORDS_BITS;
/// The `SRC4_DIR` word, within a generation, that holds the class of a /24 (`slash24`: the
/// address in host order, shifted right by 8).
#[inline(always)]
pub const fn dir_word(slash24: u32) -> u32 {
    slash24 >> 3
}

/// The position of a /24's class byte in its word (bits `shift..shift + 8`).
#[inline(always)]
pub const fn dir_shift(slash24: u32) -> u32 {
    (slash24 & 7) * 8
}

/// The class of a /24, read from its word ([`dir_word`]).
#[inline(always)]
pub const fn dir_class(word: u64, slash24: u32) -> u64 {
    (word >> dir_shift(slash24)) & 0xff
}

/// The word with the class of a /24 replaced by `class` (0..=255).
#[inline(always)]
pub const fn dir_with_class(word: u64, slash24: u32, class: u64) -> u64 {
    (word & !(0xff << dir_shift(slash24))) | ((class & 0xff) << dir_shift(slash24))
}

/// Class meaning "look the address up in the LPM trie".
pub const CLASS_USE_LPM: u64 = 255;
/// Classes per generation in `SRC4_CLASS`.
pub const CLASSES: u32 = 256;

/// `SRC4_DECIDE[(gen × max_services + service) × CLASSES + class]`: what the rules of a service
/// decide for an IPv4 source of a DIR-24-8 class, computed in user space for every (service,
/// class), so that the common cases skip the rule walk. The first rule that a source of the class
/// can match (source dimension only, in file order) either matches every such packet — no
/// protocol, port, length, TTL, TCP-flag or ICMP-type condition — and then decides alone, or it
/// does not, and the program walks the rules as usual. Exact by construction: it is the answer the
/// walk would give. [`CLASS_USE_LPM`] and IPv6 always walk.
pub const DECIDE_WALK: u32 = 0;
/// No rule of the service can match a source of this class.
pub const DECIDE_NO_RULE: u32 = 1;
/// Bit set when the deciding rule is a deny (the flood-drop path needs nothing else).
pub const DECIDE_DENY: u32 = 1 << 8;

/// A decision for rule slot `slot` (0..64), rule `rule_index` (0..1024) of the network file:
/// bits 0..7 = 2 + slot, bit 8 = deny, bits 16..26 = rule index (for its hit counter).
pub const fn decide_rule(slot: u32, deny: bool, rule_index: u32) -> u32 {
    (2 + slot) | if deny { DECIDE_DENY } else { 0 } | (rule_index << 16)
}

/// Whether a decision is a deny rule's ([`decide_rule`] with `deny`): the packet is dropped.
#[inline(always)]
pub const fn decide_is_deny(decision: u32) -> bool {
    decision & DECIDE_DENY != 0
}

/// The rule slot of a decision made by [`decide_rule`] (meaningless for [`DECIDE_WALK`] and
/// [`DECIDE_NO_RULE`], which the program tells apart first).
#[inline(always)]
pub const fn decide_slot(decision: u32) -> u32 {
    (decision & 0xff).wrapping_sub(2)
}

/// The rule index (in the network file) of a decision made by [`decide_rule`].
#[inline(always)]
pub const fn decide_rule_index(decision: u32) -> u32 {
    (decision >> 16) & (MAX_RULES_TOTAL - 1)
}

/// LPM key data for IPv4 sources: byte 0 is the generation, bytes 1..5 the address.
/// The trie's prefix length is `8 + prefix`, so the generation byte always takes part.
pub type LpmData4 = [u8; 8];
/// LPM key data for IPv6 sources: byte 0 the generation, bytes 1..17 the address.
pub type LpmData6 = [u8; 20];

/// `SET_TBL` index: for a service, a chunk (byte position of the set bitmap) and the byte value,
/// the rules whose source sets intersect those 8 sets. OR-ing the (at most 8) non-zero chunks of
/// a packet's set bitmap gives the rules its source can match: O(1) whatever the prefix count.
#[inline(always)]
pub const fn set_table_index(gen_service: u32, chunk: u32, byte: u32) -> u32 {
    (gen_service * SET_CHUNKS + chunk) * 256 + byte
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

/// Buckets per CPU of the edge's flow cache (`FLOW_CACHE`, in front of `FLOWS`; a power of
/// two): 32,768 buckets of two 32-byte entries = 2 MiB per CPU, room for about 40,000 busy
/// flows per CPU before collisions send a noticeable share of packets to `FLOWS`. The map is
/// not pinned, so this may change without a layout version.
pub const FLOW_CACHE_BUCKETS: u32 = 32_768;

/// Key of the `FLOWS` LRU: one player's flow to one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub service_id: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
    /// As in [`VipKey::addr`].
    pub src: [u32; 4],
}

/// Value of `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Backend address, network byte order: what survives config changes.
    pub backend: u32,
    /// Backend index in the config generation that last confirmed this flow.
    pub backend_index: u32,
    /// [`Control::version`] of that confirmation: while it is still the live version, the flow
    /// needs no re-check (saves a hash lookup per packet).
    pub config_version: u32,
    pub _pad: u32,
    /// Reserved, written as 0: the edge no longer stamps new flows with `bpf_ktime_get_ns`
    /// (nothing read it, and the helper call cost time on every new flow).
    pub created_ns: u64,
}

/// Key of the `BUCKETS` LRU: one source under one profile of one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BucketKey {
    pub service_id: u32,
    pub profile_id: u32,
    pub family: u8,
    pub _pad: [u8; 3],
    /// As in [`VipKey::addr`].
    pub src: [u32; 4],
}

/// Value of `BUCKETS`: GCRA timestamps updated with compare-and-swap by any CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub tat_packets: u64,
    pub tat_bytes: u64,
    pub blocked_until_ns: u64,
}

/// `NEWSRC[0]`: the one-second window of the new-source cap, shared by all CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceWindow {
    pub window_start_ns: u64,
    pub count: u64,
}

/// Packets and bytes, the value of every per-CPU counter array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// `IFACES[ifindex]`: facts about our own interfaces the XDP program cannot learn itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceInfo {
    pub mac: [u8; 6],
    /// Interface MTU: the limit for encapsulated packets sent with a cached next hop.
    pub mtu: u16,
}

/// How long (in jiffies: 0.25 s at HZ=1000, 2.5 s at HZ=100) a cached FIB answer is used before
/// `bpf_fib_lookup` is asked again. Reading jiffies costs one load; the FIB lookup is the most
/// expensive step of the forward path.
pub const FIB_CACHE_JIFFIES: u64 = 250;

/// `FIB_CACHE[backend index]` (per CPU): the last FIB answer for a backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FibCacheEntry {
    /// The backend this answer is for (indices move between config generations).
    pub backend: u32,
    pub ingress: u32,
    pub egress: u32,
    pub mtu: u32,
    pub expires_jiffies: u64,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad: [u8; 4],
}

/// `B_SETTINGS[0]`: what the backend programs need to know about their node.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendSettings {
    /// This backend's address (the IPIP outer destination), network byte order.
    pub address: u32,
    /// [`BACKEND_NATIVE`] or [`BACKEND_TUNNEL`].
    pub mode: u32,
}

/// Backend mode: our XDP program decapsulates.
pub const BACKEND_NATIVE: u32 = 0;
/// Backend mode: a kernel IPIP tunnel decapsulates and the game servers answer into it; `dsr`
/// catches the encapsulated replies.
pub const BACKEND_TUNNEL: u32 = 1;

/// Key of `B_FLOWS` (LRU): a player's flow to a service, as seen on the way in, so the reply
/// can be given the VIP the player addressed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReplyKey {
    /// Player address, network byte order.
    pub player: u32,
    /// Player's port (host order).
    pub player_port: u16,
    /// Service port (host order).
    pub service_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Bytes of each captured packet kept (the headers that explain a verdict, and some payload).
pub const CAPTURE_SNAPLEN: u32 = 256;
/// Bytes of the capture ring buffer (a power of two; ~3,000 samples in flight).
pub const CAPTURE_RING_BYTES: u32 = 1 << 20;

/// What `anypop capture` asks the edge program to sample. All zero (the default) is "off": the
/// program then pays one array read and one test per packet.
///
/// Layout compatibility: this was `{ reasons: u64, service, per_cpu_pps }`. On little-endian
/// (the only BPF target anypop builds) `reasons` is the old field's low half and `expires` its
/// high half, so the value keeps its 16 bytes and a pinned map is shared across versions: an
/// older program reads `expires` as reason bits 32..63, which no reason has (every reason is
/// below 32, asserted at compile time where the bitmap is built); an older `anypop capture`
/// leaves `expires` 0, "no deadline".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Bit `r` set: sample packets whose verdict reason is `r`.
    pub reasons: u32,
    /// Second of CLOCK_MONOTONIC (`bpf_ktime_get_ns() / 1e9`) from which the program stops
    /// sampling; 0: no deadline. A running capture keeps pushing it a few seconds ahead, so one
    /// that dies without clearing its request (`kill -9`) stops sampling by itself.
    pub expires: u32,
    /// Only this service index (live generation), or [`NONE`] for any.
    pub service: u32,
    /// Samples per second per CPU at most: a flood cannot flood the ring or the reader.
    pub per_cpu_pps: u32,
}

/// Per-CPU sampling budget of the current one-second window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureWindow {
    pub start_ns: u64,
    pub taken: u32,
    pub _pad: u32,
}

/// One sampled packet, as the ring buffer carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureRecord {
    /// XDP action returned.
    pub action: u32,
    /// Verdict reason (`Reason as u32`).
    pub reason: u32,
    /// Service index in the live generation, or [`NONE`].
    pub service: u32,
    /// Rule index (names in the network file's order), or [`NONE`].
    pub rule: u32,
    /// Live generation slot when sampled.
    pub generation: u32,
    /// Length of the frame on the wire (as the program left it).
    pub len: u32,
    /// Bytes in `data`.
    pub caplen: u32,
    pub _pad: u32,
    pub data: [u8; CAPTURE_SNAPLEN as usize],
}

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
