//! Property test on the real `edge` program: many thousands of random and mutated frames.
//! Whatever arrives, the program never returns XDP_ABORTED, never forwards an invalid packet,
//! passes every frame to the kernel as it came (except `fwd_ipip_kernel`'s, a valid IPIP packet),
//! and counts exactly one verdict per frame.
mod common;

use anypop::dataplane::testrun::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use anypop_common::verdict::Reason;
use common::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use rand::{Rng, SeedableRng, rngs::StdRng};

const NETWORK: &str = GOLDEN_TOML;

/// Valid frames of every kind the program knows, to mutate from.
fn seeds() -> Vec<Vec<u8>> {
    let vip = [203, 0, 113, 10];
    let vip6 = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let p6 = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    vec![
        udp4([100, 64, 1, 2], 40000, vip, 27015, b"tick"),
        udp4([100, 64, 1, 2], 40000, vip, 27016, b"tick"),
        udp4([9, 9, 9, 9], 1, vip, 27016, &[7u8; 300]),
        // Too big to tunnel (1500-byte IP packet, DF): answered with ICMP fragmentation needed.
        udp4([100, 64, 1, 3], 40000, vip, 27016, &[5u8; 1500 - 28]),
        with_vlans(
            &udp4([100, 64, 1, 3], 40000, vip, 27016, &[5u8; 1500 - 28]),
            &[(0x8100, 3)],
        ),
        tcp4([100, 64, 1, 2], 40000, vip, 443, true, false),
        tcp4([100, 64, 1, 2], 40000, vip, 443, false, true),
        icmp4_echo([100, 64, 1, 2], vip),
        with_vlans(
            &udp4([100, 64, 1, 2], 40000, vip, 27016, b"vlan"),
            &[(0x8100, 3)],
        ),
        with_vlans(
            &udp4([100, 64, 1, 2], 40000, vip, 27016, b"qinq"),
            &[(0x88a8, 3), (0x8100, 4)],
        ),
        udp6(p6, vip6, 27015),
        udp6_with_ext(p6, vip6, 27015, &[0, 60, 43]),
        set_frag4(
            &udp4([100, 64, 1, 2], 40000, vip, 27016, b"fragment"),
            true,
            0,
        ),
        // be-4's neighbour is unknown: encapsulated and passed to the kernel.
        udp4([100, 64, 1, 2], 40000, vip, 27018, b"to the kernel"),
        with_vlans(
            &udp4([100, 64, 1, 2], 40000, vip, 27018, b"to the kernel, tagged"),
            &[(0x8100, 3)],
        ),
    ]
}

/// Checks an ICMP "fragmentation needed" sent back for a frame too big to tunnel: addressed
/// from the input's destination to its source, MACs swapped and L2 tags kept, valid IPv4 and
/// ICMP checksums, and quoting the input's IPv4 header and first 8 bytes.
fn assert_valid_frag_needed(input: &[u8], out: &[u8]) {
    let l2 = out.len() - 56;
    assert!(
        matches!(l2, 14 | 18 | 22),
        "ICMP error frame length: {out:02x?}"
    );
    assert_eq!(&out[0..6], &input[6..12], "back to the sender's MAC");
    assert_eq!(&out[6..12], &input[0..6], "from ours");
    assert_eq!(&out[12..l2], &input[12..l2], "VLAN tags and EtherType kept");
    let ip = &out[l2..l2 + 20];
    assert_eq!(checksum(ip), 0, "ICMP error's IPv4 checksum");
    assert_eq!(&ip[12..16], &input[l2 + 16..l2 + 20], "from the VIP");
    assert_eq!(&ip[16..20], &input[l2 + 12..l2 + 16], "to the player");
    let icmp = &out[l2 + 20..];
    assert_eq!(checksum(icmp), 0, "ICMP checksum");
    assert_eq!(&icmp[..2], &[3, 4], "type 3 code 4");
    assert_eq!(&icmp[8..], &input[l2..l2 + 28], "the quote");
    assert_eq!(input[l2 + 6] & 0x40, 0x40, "answered only with DF set");
}

/// Checks a forwarded frame: Ethernet + valid outer IPv4 (protocol 4, checksum, length, from the
/// tunnel source, TTL 64, no identification, no fragment offset; DF and TOS those of the inner
/// header) + an inner IPv4 packet identical to the input's IP packet, then any padding the input
/// carried after it. Returns the outer destination (the backend).
fn assert_valid_ipip(input: &[u8], out: &[u8]) -> [u8; 4] {
    assert!(out.len() >= 34, "forwarded frame too short: {out:02x?}");
    assert_eq!(&out[12..14], &[0x08, 0x00], "outer ethertype");
    let outer = &out[14..34];
    assert_eq!(outer[0], 0x45, "outer version/ihl");
    assert_eq!(outer[9], 4, "outer protocol IPIP");
    assert_eq!(checksum(outer), 0, "outer checksum");
    assert_eq!(outer[8], 64, "outer TTL");
    assert_eq!(&outer[4..6], &[0, 0], "outer identification");
    assert_eq!(
        &outer[12..16],
        &[198, 51, 100, 1],
        "outer source = tunnel source"
    );
    let outer_len = u16::from_be_bytes([outer[2], outer[3]]) as usize;
    let inner = &out[34..];
    assert!(inner.len() + 20 >= outer_len, "outer length beyond frame");
    let inner_len = u16::from_be_bytes([inner[2], inner[3]]) as usize;
    assert_eq!(outer_len, inner_len + 20, "outer length = inner + 20");
    assert_eq!(outer[1], inner[1], "outer TOS = inner TOS");
    assert_eq!(
        (outer[6], outer[7]),
        (inner[6] & 0x40, 0),
        "outer DF = inner DF, never a fragment"
    );
    assert_eq!(
        checksum(&inner[..((inner[0] & 0xf) as usize) * 4]),
        0,
        "inner checksum untouched and valid"
    );
    // The inner packet is the input's IP packet, byte for byte, and what followed it follows.
    let parsed = SlicedPacket::from_ethernet(input).expect("a forwarded input parses");
    let Some(NetSlice::Ipv4(ip)) = parsed.net else {
        panic!("only IPv4 is forwarded")
    };
    let l3 = ip.header().slice().as_ptr() as usize - input.as_ptr() as usize;
    assert_eq!(inner, &input[l3..], "inner packet (and padding) unchanged");
    assert!(matches!(
        parsed.transport,
        Some(TransportSlice::Udp(_))
            | Some(TransportSlice::Tcp(_))
            | Some(TransportSlice::Icmpv4(_))
            | None
    ));
    [outer[16], outer[17], outer[18], outer[19]]
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut f = seed.to_vec();
    match rng.gen_range(0..6) {
        0 => {
            // flip a few bytes anywhere
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..f.len());
                f[i] = rng.r#gen();
            }
        }
        1 => {
            // flip a byte in the headers (first 64 bytes), where parsing decisions are made
            let i = rng.gen_range(0..f.len().min(64));
            f[i] ^= 1 << rng.gen_range(0..8);
        }
        2 => f.truncate(rng.gen_range(14..=f.len())),
        3 => f.extend((0..rng.gen_range(1..64)).map(|_| rng.r#gen::<u8>())),
        4 => {
            // random IPv4 header length / total length
            if f.len() > 18 {
                f[14] = 0x40 | rng.gen_range(0..16);
                f[16] = rng.r#gen();
                f[17] = rng.r#gen();
            }
        }
        _ => {
            // entirely random frame
            let n = rng.gen_range(14..200);
            f = (0..n).map(|_| rng.r#gen()).collect();
            if rng.gen_bool(0.5) {
                f[12] = 0x08;
                f[13] = 0x00;
            }
        }
    }
    f
}

#[test]
fn random_and_mutated_frames_never_abort_and_never_forward_garbage() {
    in_lab(|lab| {
        let mut t = TestEdge::new(NETWORK, lab);
        let mut rng = StdRng::seed_from_u64(0x616e_7970_6f70);
        let seeds = seeds();
        let n = 20_000;
        let before = t.snapshot();
        let mut forwarded = 0;
        let mut answered = 0;
        let mut to_kernel = 0;
        for i in 0..n {
            let seed = &seeds[i % seeds.len()];
            let f = if i < seeds.len() {
                seed.clone()
            } else {
                mutate(&mut rng, seed)
            };
            let r = t.run(&f, lab.a0);
            assert!(
                matches!(r.action, XDP_DROP | XDP_PASS | XDP_TX | XDP_REDIRECT),
                "frame {i}: action {}",
                r.action
            );
            let frag_needed = r.output.len() >= 70
                && r.output.len() < f.len()
                && r.output[r.output.len() - 56 + 9] == 1;
            if r.action == XDP_TX && frag_needed {
                answered += 1;
                assert_valid_frag_needed(&f, &r.output);
            } else if r.action == XDP_TX || r.action == XDP_REDIRECT {
                forwarded += 1;
                assert_valid_ipip(&f, &r.output);
            } else if r.action == XDP_DROP {
                assert_eq!(r.output, f, "frame {i}: a dropped frame is not modified");
            } else if r.output != f {
                // Passed and rewritten: only `fwd_ipip_kernel` does that, encapsulating for
                // be-4 and addressing the frame to our own MAC for the kernel to forward.
                to_kernel += 1;
                let backend = assert_valid_ipip(&f, &r.output);
                assert_eq!(
                    backend,
                    [198, 51, 100, 24],
                    "frame {i}: only be-4 needs the kernel"
                );
                assert_eq!(&r.output[0..6], lab.a0_mac, "frame {i}: to our MAC");
                assert_eq!(&r.output[6..12], lab.a0_mac, "frame {i}: from our MAC");
            }
        }
        let after = t.snapshot();
        let total: u64 = delta(&before, &after).iter().map(|(_, d)| d).sum();
        assert_eq!(total, n as u64, "exactly one verdict per frame");
        assert!(
            forwarded > 100,
            "the mutations should leave many frames valid ({forwarded})"
        );
        let d = delta(&before, &after);
        assert_eq!(
            d.iter()
                .find(|(r, _)| *r == Reason::DropMtuIcmp)
                .map_or(0, |(_, n)| *n),
            answered,
            "every drop_mtu_icmp verdict sent a valid ICMP error"
        );
        assert_eq!(
            d.iter()
                .find(|(r, _)| *r == Reason::FwdIpipKernel)
                .map_or(0, |(_, n)| *n),
            to_kernel,
            "every fwd_ipip_kernel verdict passed a valid IPIP packet; every other pass, the \
             frame as it came"
        );
        for must in [
            Reason::DropMalformed,
            Reason::FwdIpip,
            Reason::FwdIpipKernel,
            Reason::PassNotVip,
            Reason::DropMtuIcmp,
        ] {
            assert!(
                d.iter().any(|(r, _)| *r == must),
                "{must:?} never seen: {d:?}"
            );
        }
    });
}
