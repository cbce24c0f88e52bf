//! The frames the test runs feed the programs, built by hand (no packet library), and the
//! deterministic blocklists that size the source tables.
use std::fmt::Write as _;

use anyhow::Context;

/// A UDP/IPv4 frame from `src` to `dst`:`dport` (source port 40000) with a short payload.
pub(super) fn udp4(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0x0a, 0, 0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00]);
    let payload = b"benchmark payload 0123456789";
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The internet checksum of an IPv4 header whose checksum field is zero.
pub(super) fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in header.chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Wraps the IP packet of an Ethernet frame in IPIP.
pub(super) fn ipip(frame: &[u8], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let inner = &frame[14..];
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + inner.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 4;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut v = frame[..14].to_vec();
    v.extend_from_slice(&ip);
    v.extend_from_slice(inner);
    v
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
