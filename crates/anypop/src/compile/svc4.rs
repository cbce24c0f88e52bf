//! `SVC4_TABLE`: every IPv4 service port and VIP of a slot in one array, placed by bucketized
//! cuckoo hashing so that the program finds a key in at most two bucket reads (see
//! `anypop_common::layout::SVC4_BUCKETS`).
use std::collections::BTreeMap;

use anypop_common::layout::*;

use super::{EdgeTables, ImageError};

/// The standby half of `SVC4_TABLE` (`SVC4_BUCKETS` buckets of `SVC4_WAYS` words): every IPv4
/// service port and VIP of `tables`, placed by cuckoo insertion (an entry that finds both its
/// buckets full displaces one of the residents to that one's other bucket). A key listed twice
/// keeps its last service, as a hash map would.
pub fn service_table(tables: &EdgeTables) -> Result<Vec<u64>, ImageError> {
    let mut entries: BTreeMap<u64, u64> = BTreeMap::new();
    for (k, svc) in &tables.services4 {
        let kind = svc4_kind(k.proto);
        if kind != 0 && *svc < 0x1000 {
            entries.insert(
                svc4_key(k.addr, k.port, kind),
                (*svc as u64) << SVC4_SERVICE_SHIFT,
            );
        }
    }
    for v in &tables.vips4 {
        entries.insert(svc4_key(v.addr, 0, SVC4_KIND_VIP), 0);
    }
    let mut t = vec![0u64; SVC4_BUCKETS as usize * SVC4_WAYS];
    'entries: for (key, value) in entries {
        let mut cur = key | value;
        let mut bucket = svc4_buckets(key).0 as usize;
        for kick in 0..1000 {
            let (b1, b2) = svc4_buckets(cur & SVC4_KEY_MASK);
            for b in [b1 as usize, b2 as usize] {
                if let Some(free) = t[b * SVC4_WAYS..(b + 1) * SVC4_WAYS]
                    .iter_mut()
                    .find(|e| **e == 0)
                {
                    *free = cur;
                    continue 'entries;
                }
            }
            std::mem::swap(&mut cur, &mut t[bucket * SVC4_WAYS + kick % SVC4_WAYS]);
            let (v1, v2) = svc4_buckets(cur & SVC4_KEY_MASK);
            bucket = if v1 as usize == bucket { v2 } else { v1 } as usize;
        }
        return Err(ImageError::ServiceTableFull { key: cur });
    }
    Ok(t)
}

/// What the program's `svc4_find` does, over a built table.
#[cfg(test)]
pub(crate) fn find(t: &[u64], key: u64) -> Option<u64> {
    let (b1, b2) = svc4_buckets(key);
    [b1, b2].iter().find_map(|&b| {
        t[b as usize * SVC4_WAYS..(b as usize + 1) * SVC4_WAYS]
            .iter()
            .copied()
            .find(|e| e & SVC4_KEY_MASK == key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_table_holds_the_largest_config() {
        // 64 VIPs × 2,048 consecutive UDP ports: the 131,072 service ports the table is sized for.
        let mut t = EdgeTables::default();
        for v in 0..64u32 {
            let addr = u32::from_ne_bytes([203, 0, 113, v as u8]);
            t.vips4.push(VipKey4 {
                addr,
                generation: 0,
            });
            for port in 20_000..22_048u16 {
                let key = ServiceKey4 {
                    addr,
                    port,
                    proto: PROTO_UDP,
                    generation: 0,
                };
                t.services4.push((key, v));
            }
        }
        // An ICMP service (port 0) on the first VIP.
        let icmp = ServiceKey4 {
            addr: t.vips4[0].addr,
            port: 0,
            proto: PROTO_ICMP,
            generation: 0,
        };
        t.services4.push((icmp, 7));
        let table = service_table(&t).unwrap();
        assert_eq!(table.len(), (SVC4_BUCKETS as usize) * SVC4_WAYS);
        assert_eq!(table.iter().filter(|e| **e != 0).count(), 131_072 + 64 + 1);
        for (k, svc) in &t.services4 {
            let e = find(&table, svc4_key(k.addr, k.port, svc4_kind(k.proto)))
                .unwrap_or_else(|| panic!("{k:?} missing"));
            assert_eq!((e >> SVC4_SERVICE_SHIFT) & 0xfff, *svc as u64);
        }
        for v in &t.vips4 {
            assert!(find(&table, svc4_key(v.addr, 0, SVC4_KIND_VIP)).is_some());
        }
        // Neighbours of the keys are not found: another port, protocol or address.
        let a = t.vips4[3].addr;
        assert!(find(&table, svc4_key(a, 22_048, SVC4_KIND_UDP)).is_none());
        assert!(find(&table, svc4_key(a, 20_000, SVC4_KIND_TCP)).is_none());
        assert!(find(&table, svc4_key(a, 0, SVC4_KIND_ICMP)).is_none());
        let other = u32::from_ne_bytes([203, 0, 114, 3]);
        assert!(find(&table, svc4_key(other, 20_000, SVC4_KIND_UDP)).is_none());
        assert!(find(&table, svc4_key(other, 0, SVC4_KIND_VIP)).is_none());
    }
}
