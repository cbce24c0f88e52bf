//! Rules and source classification: rule entries, the DIR-24-8 source directory, the
//! precomputed per-class decisions and their packed encoding, LPM key data and the set→rule
//! table index.

use super::{MAX_RULES_TOTAL, SET_CHUNKS};

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
