//! One generation of the edge program's config exactly as the kernel's maps will hold it: every
//! array, hash and trie of the standby slot as data ([`EdgeImage`]). The data plane only diffs
//! it against what the slot last held, writes it and switches.
use std::collections::{BTreeSet, HashMap};

use anypop_common::{
    layout::*,
    maglev::{self, MaglevBackend},
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{
    EdgeTables, MaglevInput, prefix_sets,
    source::{self, SourceDir},
    svc4,
};

/// Tables that cannot become an image for the loaded program.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "SVC4_TABLE: no place for service key {key:#x} after 1000 moves (the table is sized for 131,072 service ports)"
    )]
    ServiceTableFull { key: u64 },
    #[error(
        "service index {index} is outside slot {generation} (tables compiled for another max_services than the loaded {max_services})"
    )]
    ServiceOutsideSlot {
        index: u32,
        generation: u8,
        max_services: u32,
    },
}

/// An LPM-trie key as the kernel compares it: the first `prefix_len` bits of `data`, which holds
/// the generation byte and then the address, so `prefix_len` is 8 + the prefix's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LpmKey<D> {
    pub prefix_len: u32,
    pub data: D,
}

/// The `SRC_V4` key of `net` in slot `generation`.
pub fn lpm_key_v4(generation: u8, net: &Ipv4Net) -> LpmKey<LpmData4> {
    let mut data = [0u8; 8];
    data[0] = generation;
    data[1..5].copy_from_slice(&net.addr().octets());
    LpmKey {
        prefix_len: 8 + net.prefix_len() as u32,
        data,
    }
}

/// The `SRC_V6` key of `net` in slot `generation`.
pub fn lpm_key_v6(generation: u8, net: &Ipv6Net) -> LpmKey<LpmData6> {
    let mut data = [0u8; 20];
    data[0] = generation;
    data[1..17].copy_from_slice(&net.addr().octets());
    LpmKey {
        prefix_len: 8 + net.prefix_len() as u32,
        data,
    }
}

/// One IPv4 service's Maglev table: [`MAGLEV_SIZE`] backend indices from the backends' *names*,
/// identical on every POP. The image keeps its inputs and builds the table ([`Self::entries`])
/// only when it is written: a table is 65,537 entries, and an unchanged one is not rewritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    /// The service index; the table starts at `service × MAGLEV_SIZE` in the slot's half of
    /// `MAGLEV` ([`Self::offset`]).
    pub service: u32,
    pub inputs: Vec<MaglevInput>,
}

impl MaglevTable {
    /// Where the table starts in the slot's half of `MAGLEV`.
    pub fn offset(&self) -> usize {
        (self.service * MAGLEV_SIZE) as usize
    }

    /// The table: a backend index per entry ([`NONE`] when every backend is drained).
    pub fn entries(&self) -> Vec<u32> {
        let backends: Vec<MaglevBackend<'_>> = self
            .inputs
            .iter()
            .map(|(name, weight, _)| MaglevBackend {
                name,
                weight: *weight,
            })
            .collect();
        maglev::build(&backends, MAGLEV_SIZE)
            .iter()
            .map(|&e| {
                if e == NONE {
                    NONE
                } else {
                    self.inputs[e as usize].2
                }
            })
            .collect()
    }
}

/// Every config map's content for one generation slot, for a program loaded with
/// `max_services`. Arrays are (index, value) pairs over the whole map, or — for the arrays
/// written through a memory mapping — the slot's half as one vector; hash maps and tries are
/// (key, value) pairs. Written into a slot whose earlier hash and trie entries are gone, it gives
/// the slot exactly this content wherever the program can look.
#[derive(Clone, Debug)]
pub struct EdgeImage {
    pub generation: u8,
    pub max_services: u32,
    /// `SETTINGS[generation]`.
    pub settings: Settings,
    /// `VIPS` (IPv6; value 1) and `SERVICES` (IPv6).
    pub vips: Vec<(VipKey, u32)>,
    pub services: Vec<(ServiceKey, u32)>,
    /// The slot's half of `SVC4_TABLE` (IPv4 services and VIPs).
    pub svc4_table: Vec<u64>,
    /// `SVC_INFO`: every service index of the slot; those beyond the file's services read "no
    /// rules, no backends".
    pub service_info: Vec<(u32, ServiceInfo)>,
    /// `RULES`.
    pub rules: Vec<(u32, RuleEntry)>,
    /// `SET_TBL`: every chunk any set uses, whole (zeros included), for every service, so no
    /// entry of an earlier config in this slot can leak into this one.
    pub set_table: Vec<(u32, u64)>,
    /// `SRC_V4` / `SRC_V6`: each prefix with the union of every covering prefix's sets.
    pub src_v4: Vec<(LpmKey<LpmData4>, u64)>,
    pub src_v6: Vec<(LpmKey<LpmData6>, u64)>,
    /// `SRC4_DIR`'s half and `SRC4_CLASS`'s.
    pub source_dir: SourceDir,
    /// The slot's half of `SRC4_DECIDE` (`max_services × CLASSES`).
    pub decide: Vec<u32>,
    /// `PROFILES`, `BACKENDS`.
    pub profiles: Vec<(u32, Profile)>,
    pub backends: Vec<(u32, Backend)>,
    /// `BE_SVC`: (generation, service, backend address) → backend index.
    pub backend_services: Vec<(BackendServiceKey, u32)>,
    /// `MAGLEV`: the tables of the IPv4 services with backends.
    pub maglev: Vec<MaglevTable>,
}

impl EdgeImage {
    /// The image of `tables` for a program whose maps were sized for `max_services`.
    pub fn build(tables: &EdgeTables, max_services: u32) -> Result<EdgeImage, ImageError> {
        let generation = tables.generation;
        let ms = max_services;
        let slot = generation as u32 * ms..(generation as u32 + 1) * ms;
        let outside = tables
            .service_info
            .iter()
            .map(|(gs, _)| *gs)
            .chain(tables.maglev_inputs.iter().map(|(s, _)| slot.start + s))
            .find(|gs| !slot.contains(gs));
        if let Some(index) = outside {
            return Err(ImageError::ServiceOutsideSlot {
                index,
                generation,
                max_services: ms,
            });
        }
        let v4 = prefix_sets::compile_v4(&tables.prefix_sets_v4);
        let v6 = prefix_sets::compile_v6(&tables.prefix_sets_v6);
        let source_dir = SourceDir::build(&v4);
        Ok(EdgeImage {
            generation,
            max_services: ms,
            settings: Settings {
                max_services: ms,
                ..tables.settings
            },
            vips: tables.vips.iter().map(|v| (*v, 1)).collect(),
            services: tables.services.clone(),
            svc4_table: svc4::service_table(tables)?,
            service_info: service_info(tables, ms),
            rules: tables.rules.clone(),
            set_table: set_table(tables, ms),
            src_v4: v4
                .iter()
                .map(|(n, b)| (lpm_key_v4(generation, n), *b))
                .collect(),
            src_v6: v6
                .iter()
                .map(|(n, b)| (lpm_key_v6(generation, n), *b))
                .collect(),
            decide: decide_half(tables, &source_dir.classes, ms),
            source_dir,
            profiles: tables.profiles.clone(),
            backends: tables.backends.clone(),
            backend_services: backend_services(tables),
            maglev: tables
                .maglev_inputs
                .iter()
                .map(|(service, inputs)| MaglevTable {
                    service: *service,
                    inputs: inputs.clone(),
                })
                .collect(),
        })
    }
}

/// `SVC_INFO` for every service index of the slot.
fn service_info(tables: &EdgeTables, ms: u32) -> Vec<(u32, ServiceInfo)> {
    let first = tables.generation as u32 * ms;
    let mut out: Vec<(u32, ServiceInfo)> = (first..first + ms)
        .map(|i| (i, ServiceInfo::default()))
        .collect();
    for (gs, info) in &tables.service_info {
        out[(gs - first) as usize].1 = *info;
    }
    out
}

/// `SET_TBL`: every chunk that any set uses, written whole (zeros included) for every service.
fn set_table(tables: &EdgeTables, ms: u32) -> Vec<(u32, u64)> {
    let mut chunks = BTreeSet::new();
    let all_bits = tables
        .prefix_sets_v4
        .iter()
        .map(|(_, b)| *b)
        .chain(tables.prefix_sets_v6.iter().map(|(_, b)| *b));
    for bits in all_bits {
        for c in 0..SET_CHUNKS {
            if (bits >> (c * 8)) & 0xff != 0 {
                chunks.insert(c);
            }
        }
    }
    let nonzero: HashMap<u32, u64> = tables.set_table.iter().copied().collect();
    let mut entries = Vec::new();
    for svc in 0..(tables.service_info.len() as u32) {
        let gs = tables.generation as u32 * ms + svc;
        for &c in &chunks {
            for byte in 0..256u32 {
                let i = set_table_index(gs, c, byte);
                entries.push((i, nonzero.get(&i).copied().unwrap_or(0)));
            }
        }
    }
    entries
}

/// The slot's half of `SRC4_DECIDE`: each service's row (see [`source::decisions`]); services
/// beyond the file's walk (and have no rules).
fn decide_half(tables: &EdgeTables, classes: &[u64], ms: u32) -> Vec<u32> {
    let first = tables.generation as u32 * ms;
    let mut half = vec![DECIDE_WALK; (ms * CLASSES) as usize];
    for (gs, row) in source::decisions(tables, classes) {
        let base = ((gs - first) * CLASSES) as usize;
        half[base..base + row.len()].copy_from_slice(&row);
    }
    half
}

/// `BE_SVC`: each (service, backend) pair with the index of the first backend at that address.
fn backend_services(tables: &EdgeTables) -> Vec<(BackendServiceKey, u32)> {
    let mut index_of: HashMap<u32, u32> = HashMap::new();
    for (i, b) in &tables.backends {
        index_of.entry(b.addr).or_insert(i % MAX_BACKENDS);
    }
    tables
        .backend_services
        .iter()
        .map(|k| (*k, index_of.get(&k.addr).copied().unwrap_or(NONE)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile::compile_edge, config::parse};
    use std::path::Path;

    const EXAMPLE: &str = include_str!("../config/example.toml");

    fn example(generation: u8, ms: u32) -> (EdgeTables, EdgeImage) {
        let net = parse(EXAMPLE, "example.toml", Path::new(".")).unwrap();
        let t = compile_edge(&net, "pop-nyc-1", generation, ms).unwrap();
        let image = EdgeImage::build(&t, ms).unwrap();
        (t, image)
    }

    #[test]
    fn the_example_image_fills_its_slot() {
        let (t, i) = example(1, 8);
        assert_eq!((i.generation, i.settings.max_services), (1, 8));
        // SVC_INFO: all 8 indices of slot 1, the file's services first, the rest empty.
        let idx: Vec<u32> = i.service_info.iter().map(|(g, _)| *g).collect();
        assert_eq!(idx, (8..16).collect::<Vec<_>>());
        assert_eq!(i.service_info[0].1, t.service_info[0].1);
        assert!(
            i.service_info[t.service_info.len()..]
                .iter()
                .all(|(_, s)| *s == ServiceInfo::default())
        );
        // SET_TBL: the blocklist's set lives in chunk 0: 256 entries per service, zeros included.
        assert_eq!(i.set_table.len(), t.service_info.len() * 256);
        assert_eq!(i.set_table.iter().filter(|(_, r)| *r != 0).count(), 128 * 2);
        // The decisions: one row per service of the file, the rest of the half walks.
        assert_eq!(i.decide.len(), (8 * CLASSES) as usize);
        assert!(
            i.decide[(2 * CLASSES) as usize..]
                .iter()
                .all(|d| *d == DECIDE_WALK)
        );
        let blocked = i.source_dir.ranges[0].2 as usize;
        assert_eq!(
            i.decide[blocked],
            decide_rule(0, true, 0),
            "the blocklist denies"
        );
        assert_eq!(i.decide[0], DECIDE_WALK, "syn-limit has a protocol: walk");
        // BE_SVC: be-fra-2 is backend 1.
        let be2 = t.backends[1].1.addr;
        assert!(
            i.backend_services
                .iter()
                .any(|(k, b)| k.addr == be2 && *b == 1)
        );
        assert_eq!(i.backend_services.len(), t.backend_services.len());
    }

    #[test]
    fn trie_keys_carry_the_slot_and_the_unions() {
        let (t, i) = example(1, 8);
        assert_eq!(i.src_v4.len(), t.prefix_sets_v4.len());
        for (k, _) in &i.src_v4 {
            assert_eq!(k.data[0], 1);
        }
        let net: Ipv4Net = "10.1.0.0/16".parse().unwrap();
        let k = lpm_key_v4(1, &net);
        assert_eq!((k.prefix_len, k.data), (24, [1, 10, 1, 0, 0, 0, 0, 0]));
        let net6: Ipv6Net = "2001:db8::/32".parse().unwrap();
        let k6 = lpm_key_v6(0, &net6);
        assert_eq!(k6.prefix_len, 40);
        assert_eq!(&k6.data[..5], &[0, 0x20, 0x01, 0x0d, 0xb8]);
    }

    #[test]
    fn maglev_tables_hold_backend_indices() {
        let (_, i) = example(0, 8);
        assert_eq!(i.maglev.len(), 2);
        let rust_eu = &i.maglev[0];
        assert_eq!(rust_eu.offset(), 0);
        let e = rust_eu.entries();
        assert_eq!(e.len(), MAGLEV_SIZE as usize);
        // be-fra-2 drains on rust-eu: every entry is be-fra-1's index.
        assert!(e.iter().all(|b| *b == rust_eu.inputs[0].2));
        assert_eq!(i.maglev[1].offset(), i.maglev[1].service as usize * 65_537);
        let drained = MaglevTable {
            service: 0,
            inputs: vec![("x".into(), 0, 3)],
        };
        assert!(drained.entries().iter().all(|b| *b == NONE));
    }

    #[test]
    fn tables_for_another_size_are_refused() {
        let net = parse(EXAMPLE, "example.toml", Path::new(".")).unwrap();
        let t = compile_edge(&net, "pop-nyc-1", 1, 64).unwrap();
        let e = EdgeImage::build(&t, 8).unwrap_err().to_string();
        assert!(
            e.contains("outside slot 1") && e.contains("loaded 8"),
            "{e}"
        );
    }

    #[test]
    fn the_service_table_places_every_ipv4_key() {
        let (t, i) = example(0, 8);
        for (k, svc) in &t.services4 {
            let e = svc4::find(&i.svc4_table, svc4_key(k.addr, k.port, svc4_kind(k.proto)));
            assert_eq!(
                e.map(|e| (e >> SVC4_SERVICE_SHIFT) & 0xfff),
                Some(*svc as u64)
            );
        }
    }
}
