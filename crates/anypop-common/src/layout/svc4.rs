//! The packed IPv4 service table (`SVC4_TABLE`): its geometry and the encoders/decoders of its
//! `u64` entries, shared so the kernel reads exactly what user space placed.

use super::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

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
