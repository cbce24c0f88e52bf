//! The frames the tests and `anypop bench` feed the programs, built with etherparse, and the one
//! internet-checksum helper for the frames they then change by hand (a fragment offset, a
//! corrupted field). The usual frame goes from the player (`PLAYER_MAC`) to the lab's `a0`
//! (`A0_MAC`), the interface the programs run on in the tests and in the benchmark.
use etherparse::{IpNumber, Ipv4Header, PacketBuilder};

/// The player's MAC: the source of the usual frames.
pub const PLAYER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
/// The lab's `a0` (tests and benchmark alike): the destination of the usual frames.
pub const A0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0];

/// An Ethernet + IPv4 + UDP frame from `src_mac` to `dst_mac`, from `src:sport` to `dst:dport`
/// with `ttl` and `payload` (etherparse's defaults otherwise: DF set, identification 0, UDP
/// checksum computed).
#[allow(clippy::too_many_arguments)]
pub fn udp4_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, ttl)
        .udp(sport, dport);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload)
        .expect("a UDP frame within IPv4's limits");
    v
}

/// The usual frame: UDP/IPv4 from the player to `a0`, TTL 64.
pub fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    udp4_frame(PLAYER_MAC, A0_MAC, src, sport, dst, dport, 64, payload)
}

/// The IP packet of the Ethernet frame `frame` wrapped in IPIP from `src` to `dst` with `ttl`
/// (the Ethernet header kept; DF set, identification 0).
pub fn ipip(frame: &[u8], src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    let inner = &frame[14..];
    let mut outer = Ipv4Header::new(inner.len() as u16, ttl, IpNumber::IPV4, src, dst)
        .expect("an inner packet that fits in IPv4");
    outer.header_checksum = outer.calc_header_checksum();
    let mut v = frame[..14].to_vec();
    outer.write(&mut v).expect("writing to a Vec cannot fail");
    v.extend_from_slice(inner);
    v
}

/// The internet checksum (RFC 1071) of `bytes`: 0 over a header whose checksum is right.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut s = 0u32;
    for c in bytes.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            (c[0] as u16) << 8
        };
        s += w as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Recomputes the checksum of the IPv4 header at offset `l3` of `frame` (after a change).
pub fn fix_ip4_checksum(frame: &mut [u8], l3: usize) {
    frame[l3 + 10] = 0;
    frame[l3 + 11] = 0;
    let ihl = ((frame[l3] & 0xf) as usize) * 4;
    let c = checksum(&frame[l3..l3 + ihl]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_valid_checksums_and_the_fields_asked_for() {
        let f = udp4([100, 64, 1, 2], 40000, [203, 0, 113, 10], 27015, b"tick");
        assert_eq!(f.len(), 14 + 20 + 8 + 4);
        assert_eq!(&f[..6], &A0_MAC);
        assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum");
        let wrapped = ipip(&f, [198, 51, 100, 1], [198, 51, 100, 21], 63);
        assert_eq!(wrapped.len(), f.len() + 20);
        assert_eq!((wrapped[14 + 8], wrapped[14 + 9]), (63, 4), "TTL, IPIP");
        assert_eq!(checksum(&wrapped[14..34]), 0, "outer checksum");
        assert_eq!(&wrapped[34..], &f[14..], "inner packet untouched");
        let mut changed = f.clone();
        changed[14 + 8] = 1;
        fix_ip4_checksum(&mut changed, 14);
        assert_eq!(checksum(&changed[14..34]), 0, "fixed after a change");
    }
}
