//! The frames the test runs feed the programs (from [`crate::lab::frames`], as the tests build
//! theirs), and the deterministic blocklists that size the source tables.
use std::fmt::Write as _;

use anyhow::Context;

use crate::lab::frames;

/// A UDP/IPv4 frame from the player's MAC to `a0`'s, from `src` to `dst`:`dport` (source port
/// 40000) with a short payload.
pub(super) fn udp4(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    frames::udp4(src, 40000, dst, dport, b"benchmark payload 0123456789")
}

/// A service's reply: from `src`:27015 (the game service) to the player's `dst`:40000.
pub(super) fn reply4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    frames::udp4(src, 27015, dst, 40000, b"benchmark payload 0123456789")
}

/// The IP packet of `frame` wrapped in IPIP from `src` to `dst` (TTL 64).
pub(super) fn ipip(frame: &[u8], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    frames::ipip(frame, src, dst, 64)
}

/// Pseudo-random /24s (deterministic) outside the ranges the frames use.
pub(super) fn write_prefixes(path: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let mut s = String::with_capacity(n * 16);
    let mut x: u32 = 0x1234_5678;
    let mut written = 0;
    while written < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let a = (x >> 24) as u8;
        if matches!(a, 0 | 10 | 100 | 127 | 198 | 203 | 224..=255) {
            continue;
        }
        let _ = writeln!(s, "{}.{}.{}.0/24", a, (x >> 16) as u8, (x >> 8) as u8);
        written += 1;
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}
