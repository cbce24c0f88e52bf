//! Hashes that must give the same answer on every POP and in every program version: the flow
//! hash that indexes the Maglev table, and the name hash that gives services and backends ids
//! that stay stable across config generations.

/// Murmur3's 32-bit finaliser: cheap, and mixes every input bit into every output bit.
#[inline(always)]
pub const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[inline(always)]
const fn mix(h: u32, w: u32) -> u32 {
    let k = w
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// Hash of a flow: source and destination addresses (as 32-bit words in network byte order, four
/// each; IPv4 uses only the first), ports and protocol. The seed is fixed so that every POP
/// computes the same value.
#[inline(always)]
pub fn flow_hash(src: &[u32; 4], dst: &[u32; 4], sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h = 0x616e_7970; // "anyp"
    h = mix(h, src[0]);
    h = mix(h, src[1]);
    h = mix(h, src[2]);
    h = mix(h, src[3]);
    h = mix(h, dst[0]);
    h = mix(h, dst[1]);
    h = mix(h, dst[2]);
    h = mix(h, dst[3]);
    h = mix(h, ((sport as u32) << 16) | dport as u32);
    h = mix(h, proto as u32);
    fmix32(h ^ 40)
}

/// FNV-1a 64-bit hash of a name, with a seed; used for Maglev permutations and stable ids.
pub const fn name_hash(name: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    let mut i = 0;
    while i < name.len() {
        h ^= name[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    // FNV alone mixes the last bytes poorly; finish with a 64-bit avalanche.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Stable 32-bit id of a name (services, rate-limit profiles): state keyed by it survives
/// config generations in which indices move.
pub const fn stable_id(name: &[u8]) -> u32 {
    name_hash(name, 0x5eed) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hash_is_deterministic_and_spreads() {
        let a = flow_hash(
            &[0x0a00_0001, 0, 0, 0],
            &[0xcb00_710a, 0, 0, 0],
            5000,
            28015,
            17,
        );
        let b = flow_hash(
            &[0x0a00_0001, 0, 0, 0],
            &[0xcb00_710a, 0, 0, 0],
            5000,
            28015,
            17,
        );
        assert_eq!(a, b);
        let c = flow_hash(
            &[0x0a00_0001, 0, 0, 0],
            &[0xcb00_710a, 0, 0, 0],
            5001,
            28015,
            17,
        );
        assert_ne!(a, c);
        // Buckets of sequential source ports are near-uniform.
        let mut buckets = [0u32; 16];
        for p in 0..16_000u16 {
            buckets[(flow_hash(&[1, 0, 0, 0], &[2, 0, 0, 0], p, 80, 6) % 16) as usize] += 1;
        }
        for b in buckets {
            assert!((900..1100).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn name_hash_depends_on_seed_and_name() {
        assert_ne!(name_hash(b"be-1", 0), name_hash(b"be-2", 0));
        assert_ne!(name_hash(b"be-1", 0), name_hash(b"be-1", 1));
        assert_eq!(stable_id(b"rust-eu"), stable_id(b"rust-eu"));
    }
}
