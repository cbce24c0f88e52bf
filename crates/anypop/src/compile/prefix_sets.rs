//! Turns prefix sets into LPM-trie entries for the kernel's one-lookup source match.
//!
//! Rules name sets of source prefixes; an address must get the bit of every set that has *any*
//! prefix covering it. The kernel does one longest-prefix match per packet, so each stored prefix
//! carries the union of its own bits and those of every shorter stored prefix that contains it.
//! Sorting by (address, length) lets one pass with a stack of enclosing prefixes compute that in
//! O(n log n): 100,000 prefixes take milliseconds.
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// An address family's prefix as the walk sees it: the address in the low `WIDTH` bits of a
/// u128 and a length. One form serves both families, so the walk and the lookup exist once.
pub trait Prefix: Copy {
    /// The family's address, what a lookup is asked about.
    type Addr;
    /// Address width in bits.
    const WIDTH: u8;
    /// The prefix with host bits cleared, as (address bits, length).
    fn bits(&self) -> (u128, u8);
    /// The prefix back from (address bits, length); the length is one `bits` produced.
    fn from_bits(addr: u128, len: u8) -> Self;
    /// Whether the prefix contains `addr`.
    fn holds(&self, addr: &Self::Addr) -> bool;
}

impl Prefix for Ipv4Net {
    type Addr = Ipv4Addr;
    const WIDTH: u8 = 32;
    fn bits(&self) -> (u128, u8) {
        let n = self.trunc();
        (u32::from(n.addr()).into(), n.prefix_len())
    }
    fn from_bits(addr: u128, len: u8) -> Self {
        Ipv4Net::new(Ipv4Addr::from(addr as u32), len).expect("valid length")
    }
    fn holds(&self, addr: &Ipv4Addr) -> bool {
        self.contains(addr)
    }
}

impl Prefix for Ipv6Net {
    type Addr = Ipv6Addr;
    const WIDTH: u8 = 128;
    fn bits(&self) -> (u128, u8) {
        let n = self.trunc();
        (n.addr().into(), n.prefix_len())
    }
    fn from_bits(addr: u128, len: u8) -> Self {
        Ipv6Net::new(Ipv6Addr::from(addr), len).expect("valid length")
    }
    fn holds(&self, addr: &Ipv6Addr) -> bool {
        self.contains(addr)
    }
}

/// Whether prefix `outer` contains prefix `inner`, both (address bits, length) of one family.
fn covers(outer: (u128, u8), inner: (u128, u8), width: u8) -> bool {
    if outer.1 > inner.1 {
        return false;
    }
    if outer.1 == 0 {
        return true;
    }
    let shift = width - outer.1;
    (outer.0 >> shift) == (inner.0 >> shift)
}

/// Prefixes of one family with their set bits → LPM entries with covering unions, sorted by
/// (address, length), one entry per distinct prefix.
pub fn compile<P: Prefix>(input: &[(P, u64)]) -> Vec<(P, u64)> {
    let mut items: Vec<(u128, u8, u64)> = input
        .iter()
        .map(|(n, b)| {
            let (a, l) = n.bits();
            (a, l, *b)
        })
        .collect();
    items.sort_unstable_by_key(|&(a, l, _)| (a, l));
    // Merge duplicates (same prefix) by OR-ing their bits.
    let mut merged: Vec<(u128, u8, u64)> = Vec::with_capacity(items.len());
    for (a, l, b) in items {
        match merged.last_mut() {
            Some(last) if last.0 == a && last.1 == l => last.2 |= b,
            _ => merged.push((a, l, b)),
        }
    }
    // Walk in (address, length) order: a prefix's enclosing prefixes come before it and are on the
    // stack; pop the ones that do not cover it, then inherit the top's (already unioned) bits.
    let mut stack: Vec<(u128, u8, u64)> = Vec::new();
    let mut out = Vec::with_capacity(merged.len());
    for (a, l, b) in merged {
        while let Some(&(sa, sl, _)) = stack.last() {
            if covers((sa, sl), (a, l), P::WIDTH) {
                break;
            }
            stack.pop();
        }
        let inherited = stack.last().map(|s| s.2).unwrap_or(0);
        let v = b | inherited;
        stack.push((a, l, v));
        out.push((P::from_bits(a, l), v));
    }
    out
}

/// IPv4 prefixes with their set bits → LPM entries with covering unions.
pub fn compile_v4(input: &[(Ipv4Net, u64)]) -> Vec<(Ipv4Net, u64)> {
    compile(input)
}

/// IPv6 prefixes with their set bits → LPM entries with covering unions.
pub fn compile_v6(input: &[(Ipv6Net, u64)]) -> Vec<(Ipv6Net, u64)> {
    compile(input)
}

/// Reference longest-prefix match over compiled entries (linear; for tests and tools).
pub fn lookup<P: Prefix>(entries: &[(P, u64)], addr: P::Addr) -> u64 {
    entries
        .iter()
        .filter(|(n, _)| n.holds(&addr))
        .max_by_key(|(n, _)| n.bits().1)
        .map(|(_, b)| *b)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n4(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn nested_prefixes_union_their_sets() {
        let c = compile_v4(&[(n4("10.0.0.0/8"), 0b01), (n4("10.1.0.0/16"), 0b10)]);
        assert_eq!(lookup(&c, "10.1.2.3".parse().unwrap()), 0b11);
        assert_eq!(lookup(&c, "10.2.0.1".parse().unwrap()), 0b01);
        assert_eq!(lookup(&c, "11.0.0.1".parse().unwrap()), 0);
    }

    #[test]
    fn duplicates_host_bits_and_extremes() {
        let c = compile_v4(&[
            (n4("192.0.2.77/24"), 1),
            (n4("192.0.2.0/24"), 4),
            (n4("0.0.0.0/0"), 8),
            (n4("192.0.2.1/32"), 2),
        ]);
        assert_eq!(c.len(), 3);
        assert_eq!(lookup(&c, "192.0.2.1".parse().unwrap()), 15);
        assert_eq!(lookup(&c, "192.0.2.9".parse().unwrap()), 13);
        assert_eq!(lookup(&c, "8.8.8.8".parse().unwrap()), 8);
    }

    #[test]
    fn ipv6_nesting() {
        let c = compile_v6(&[
            ("2001:db8::/32".parse().unwrap(), 1),
            ("2001:db8:bad::/48".parse().unwrap(), 2),
        ]);
        assert_eq!(lookup(&c, "2001:db8:bad::1".parse().unwrap()), 3);
        assert_eq!(lookup(&c, "2001:db8:1::1".parse().unwrap()), 1);
        assert_eq!(lookup(&c, "2001:db9::1".parse().unwrap()), 0);
    }

    #[test]
    fn siblings_do_not_leak_into_each_other() {
        let c = compile_v4(&[
            (n4("10.0.0.0/9"), 1),
            (n4("10.128.0.0/9"), 2),
            (n4("10.128.5.0/24"), 4),
        ]);
        assert_eq!(lookup(&c, "10.1.1.1".parse().unwrap()), 1);
        assert_eq!(lookup(&c, "10.128.5.5".parse().unwrap()), 6);
    }

    #[test]
    fn a_hundred_thousand_prefixes() {
        let input: Vec<(Ipv4Net, u64)> = (0..100_000u32)
            .map(|i| {
                (
                    Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (i << 8)), 24).unwrap(),
                    1u64 << (i % 3),
                )
            })
            .chain(std::iter::once((n4("10.0.0.0/8"), 8)))
            .collect();
        let t = std::time::Instant::now();
        let c = compile_v4(&input);
        assert!(t.elapsed().as_millis() < 2000);
        assert_eq!(c.len(), 100_001);
        // 10.0.5.x is i = 5: bit 1 << 2, plus the /8.
        assert_eq!(lookup(&c, "10.0.5.9".parse().unwrap()), 4 | 8);
    }

    /// Addresses for the property tests: only a few bits vary (`mask`), so random prefixes nest,
    /// overlap and duplicate often; half the probes fall inside an input prefix.
    fn probe(prefix_addr: u128, host: u128, host_bits: u8, width: u8, inside: bool) -> u128 {
        let low = if host_bits >= width {
            u128::MAX >> (128 - width as u32)
        } else {
            (1u128 << host_bits) - 1
        };
        if inside {
            prefix_addr | (host & low)
        } else {
            host & (u128::MAX >> (128 - width as u32))
        }
    }

    proptest! {
        #[test]
        fn one_lookup_equals_brute_force_v4(
            prefixes in prop::collection::vec((any::<u32>(), 0u8..=32, 0u32..64), 1..40),
            probes in prop::collection::vec((any::<prop::sample::Index>(), any::<u32>(), any::<bool>()), 1..40),
        ) {
            let mask = 0xc0a8_0301u32;
            let input: Vec<(Ipv4Net, u64)> = prefixes
                .iter()
                .map(|&(a, l, s)| (Ipv4Net::new(Ipv4Addr::from(a & mask), l).unwrap(), 1u64 << s))
                .collect();
            let c = compile_v4(&input);
            prop_assert!(c.windows(2).all(|w| (w[0].0.addr(), w[0].0.prefix_len()) < (w[1].0.addr(), w[1].0.prefix_len())));
            for (i, host, inside) in probes {
                let (n, _) = input[i.index(input.len())];
                let n = n.trunc();
                let a = probe(u32::from(n.addr()).into(), (host & mask).into(), 32 - n.prefix_len(), 32, inside);
                let addr = Ipv4Addr::from(a as u32);
                let want = input.iter().filter(|(n, _)| n.contains(&addr)).fold(0, |a, (_, b)| a | b);
                prop_assert_eq!(lookup(&c, addr), want);
            }
        }

        #[test]
        fn one_lookup_equals_brute_force_v6(
            prefixes in prop::collection::vec((any::<u128>(), 0u8..=128, 0u32..64), 1..40),
            probes in prop::collection::vec((any::<prop::sample::Index>(), any::<u128>(), any::<bool>()), 1..40),
        ) {
            let mask = (0x2001_0db8u128 << 96) | (0xf << 64) | 0x3;
            let input: Vec<(Ipv6Net, u64)> = prefixes
                .iter()
                .map(|&(a, l, s)| (Ipv6Net::new(Ipv6Addr::from(a & mask), l).unwrap(), 1u64 << s))
                .collect();
            let c = compile_v6(&input);
            for (i, host, inside) in probes {
                let (n, _) = input[i.index(input.len())];
                let n = n.trunc();
                let a = probe(u128::from(n.addr()), host & mask, 128 - n.prefix_len(), 128, inside);
                let addr = Ipv6Addr::from(a);
                let want = input.iter().filter(|(n, _)| n.contains(&addr)).fold(0, |a, (_, b)| a | b);
                prop_assert_eq!(lookup(&c, addr), want);
            }
        }
    }
}
