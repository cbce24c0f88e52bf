//! The POP's `edge` XDP program: load it with maps sized from config and pinned under the node's
//! directory, write config generations into its maps, attach it to interfaces.
use std::{
    collections::BTreeSet,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use anypop_common::layout::*;
use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, lpm_trie::Key, xdp::DevMapHash},
    programs::{
        Xdp, XdpMode,
        links::FdLink,
        xdp::{XdpLink, XdpLinkId},
    },
};

use super::DataplaneError;
use crate::compile::{EdgeTables, prefix_sets};

/// The compiled `edge` object, embedded at build time (crates/anypop/build.rs).
static EDGE_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edge"));

/// Map sizes that come from the network file rather than from the program's defaults.
#[derive(Clone, Debug)]
pub struct EdgeSizes {
    pub max_services: u32,
    pub flow_entries: u32,
    pub bucket_entries: u32,
}

impl Default for EdgeSizes {
    fn default() -> Self {
        EdgeSizes {
            max_services: MAX_SERVICES,
            flow_entries: 1_000_000,
            bucket_entries: 1_000_000,
        }
    }
}

/// A loaded (not necessarily attached) `edge` program and its maps.
pub struct Edge {
    pub ebpf: Ebpf,
    pub pin_dir: PathBuf,
    pub sizes: EdgeSizes,
    /// Attachments made by this process, by interface name.
    /// Our attachments, each pinned (`link_<ifname>`) the moment it exists: the descriptor here
    /// is a second reference, so the data plane outlives this process however it ends.
    links: Vec<(String, FdLink)>,
    /// What this process last wrote into each slot: a small change to the config (a prefix
    /// added, one service's backends changed) then rewrites only what differs in the big tables
    /// (source tries, the DIR-24-8 table, Maglev). None: unknown, write everything.
    slot_memo: [Option<SlotMemo>; GENERATIONS as usize],
}

/// The big tables of one slot as last written (see [`Edge::apply`]).
#[derive(Clone, Default)]
struct SlotMemo {
    v4: Vec<(ipnet::Ipv4Net, u64)>,
    v6: Vec<(ipnet::Ipv6Net, u64)>,
    /// The DIR-24-8 classes written for `v4`.
    classes: Vec<u64>,
    /// Maglev inputs per service index.
    maglev: std::collections::HashMap<u32, Vec<crate::compile::MaglevInput>>,
}

/// How much of a slot an apply rewrote (for logs and the benchmark).
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteStats {
    /// Source-trie entries inserted or removed.
    pub trie_writes: usize,
    /// Whether the DIR-24-8 table was rewritten.
    pub dir_rewritten: bool,
    /// Maglev tables rebuilt and written.
    pub maglev_tables: usize,
}

/// Result of writing a generation.
#[derive(Clone, Copy, Debug)]
pub struct Applied {
    pub generation: u32,
    pub version: u32,
    /// How much of the big tables was rewritten.
    pub written: WriteStats,
}

/// Trie entries to remove and to (re)write to turn `old` (None: an empty slot) into `new`; both
/// lists sorted by prefix as `prefix_sets` compiles them.
fn trie_delta<N: Ord + Copy>(
    old: Option<&[(N, u64)]>,
    new: &[(N, u64)],
) -> (Vec<N>, Vec<(N, u64)>) {
    let Some(old) = old else {
        return (Vec::new(), new.to_vec());
    };
    let old_map: std::collections::BTreeMap<N, u64> = old.iter().copied().collect();
    let new_map: std::collections::BTreeMap<N, u64> = new.iter().copied().collect();
    let gone = old_map
        .keys()
        .filter(|k| !new_map.contains_key(k))
        .copied()
        .collect();
    let changed = new_map
        .iter()
        .filter(|(k, v)| old_map.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect();
    (gone, changed)
}

fn map_err(what: &str, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Map(format!("{what}: {e}"))
}

impl Edge {
    /// Loads the program, creating (or reusing) its maps pinned in `pin_dir`.
    pub fn load(pin_dir: &Path, sizes: EdgeSizes) -> Result<Edge, DataplaneError> {
        if EDGE_OBJ.is_empty() {
            return Err(DataplaneError::NotBuilt);
        }
        std::fs::create_dir_all(pin_dir).map_err(|e| DataplaneError::PinDir {
            path: pin_dir.to_owned(),
            source: e,
        })?;
        let ms = sizes.max_services.clamp(1, 4096);
        let g = GENERATIONS;
        let mut loader = EbpfLoader::new();
        loader
            .default_map_pin_directory(pin_dir)
            .map_max_entries("SVC_INFO", g * ms)
            .map_max_entries("RULES", g * ms * RULES_PER_SERVICE)
            .map_max_entries("SET_TBL", g * ms * SET_CHUNKS * 256)
            .map_max_entries("MAGLEV", g * ms * MAGLEV_SIZE)
            .map_max_entries("SRC4_DIR", g * DIR_WORDS)
            .map_max_entries("SRC4_DECIDE", g * ms * CLASSES)
            .map_max_entries("SVC_HITS", g * ms)
            .map_max_entries("FLOWS", sizes.flow_entries.max(1024))
            .map_max_entries("FLOW_CACHE", FLOW_CACHE_BUCKETS * possible_cpus()?)
            .map_max_entries("BUCKETS", sizes.bucket_entries.max(1024));
        let mut ebpf = loader
            .load(EDGE_OBJ)
            .map_err(|e| DataplaneError::Load(format!("{e:#}")))?;
        let prog: &mut Xdp = ebpf
            .program_mut("edge")
            .ok_or_else(|| DataplaneError::Load("program `edge` missing from object".into()))?
            .try_into()
            .map_err(|e| DataplaneError::Load(format!("{e}")))?;
        prog.load()
            .map_err(|e| DataplaneError::Verifier(verifier_text(&e)))?;
        Ok(Edge {
            ebpf,
            pin_dir: pin_dir.to_owned(),
            sizes: EdgeSizes {
                max_services: ms,
                ..sizes
            },
            links: Vec::new(),
            slot_memo: Default::default(),
        })
    }

    /// The loaded program, for attaching or BPF_PROG_TEST_RUN.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program("edge")
            .expect("loaded")
            .try_into()
            .expect("xdp")
    }

    pub fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut("edge")
            .expect("loaded")
            .try_into()
            .expect("xdp")
    }

    fn map(&mut self, name: &str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| DataplaneError::Map(format!("map {name} missing")))
    }

    /// The live generation slot and its switch counter.
    pub fn control(&mut self) -> Result<Control, DataplaneError> {
        let m: Array<&mut MapData, Control> =
            Array::try_from(self.map("CONTROL")?).map_err(|e| map_err("CONTROL", e))?;
        m.get(&0, 0).map_err(|e| map_err("CONTROL", e))
    }

    /// The slot a new config is written to: the one that is not live.
    pub fn standby_generation(&mut self) -> Result<u8, DataplaneError> {
        Ok((1 - (self.control()?.active_gen & 1)) as u8)
    }

    /// Inserts entries into a hash map.
    fn put_hash<K: Pod, V: Pod>(
        &mut self,
        name: &str,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), DataplaneError> {
        let mut m: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.map(name)?).map_err(|e| map_err(name, e))?;
        for (k, v) in entries {
            m.insert(k, v, 0).map_err(|e| map_err(name, e))?;
        }
        Ok(())
    }

    /// Sets entries of an array map.
    fn put_array<V: Pod>(
        &mut self,
        name: &str,
        entries: impl IntoIterator<Item = (u32, V)>,
    ) -> Result<(), DataplaneError> {
        let mut m: Array<&mut MapData, V> =
            Array::try_from(self.map(name)?).map_err(|e| map_err(name, e))?;
        for (i, v) in entries {
            m.set(i, v, 0).map_err(|e| map_err(name, e))?;
        }
        Ok(())
    }

    /// Removes the hash-map entries whose key matches `belongs`.
    fn clear_hash<K: Pod, V: Pod>(
        &mut self,
        name: &str,
        belongs: impl Fn(&K) -> bool,
    ) -> Result<(), DataplaneError> {
        let mut m: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.map(name)?).map_err(|e| map_err(name, e))?;
        let keys: Vec<K> = m
            .keys()
            .filter_map(Result::ok)
            .filter(|k| belongs(k))
            .collect();
        for k in keys {
            let _ = m.remove(&k);
        }
        Ok(())
    }

    /// Removes the LPM entries whose data matches `belongs`.
    fn clear_lpm<K: Pod>(
        &mut self,
        name: &str,
        belongs: impl Fn(&K) -> bool,
    ) -> Result<(), DataplaneError> {
        let mut m: LpmTrie<&mut MapData, K, u64> =
            LpmTrie::try_from(self.map(name)?).map_err(|e| map_err(name, e))?;
        let keys: Vec<Key<K>> = m
            .keys()
            .filter_map(Result::ok)
            .filter(|k| belongs(&k.data()))
            .collect();
        for k in keys {
            let _ = m.remove(&k);
        }
        Ok(())
    }

    /// Writes `tables` (compiled for the standby slot) into the maps, then makes it live with one
    /// store to `CONTROL`. The live slot is not touched until that store, so a failure anywhere
    /// before it leaves the running config as it was.
    pub fn apply(&mut self, tables: &EdgeTables) -> Result<Applied, DataplaneError> {
        let generation = tables.generation;
        let standby = self.standby_generation()?;
        if generation != standby {
            return Err(DataplaneError::Map(format!(
                "tables were compiled for slot {generation}, but the standby slot is {standby}"
            )));
        }
        let gen32 = generation as u32;
        // Known content of this slot (taken: a failure below leaves it unknown).
        let memo = self.slot_memo[generation as usize & 1].take();
        self.clear_slot(generation, memo.is_none())?;
        let ms = self.sizes.max_services;
        let mut stats = WriteStats::default();

        let mut settings = tables.settings;
        settings.max_services = ms;
        self.put_array("SETTINGS", [(gen32, settings)])?;
        self.put_hash("VIPS", tables.vips.iter().map(|v| (*v, 1u32)))?;
        self.put_hash("SERVICES", tables.services.iter().copied())?;
        let svc4 = build_service_table(tables)?;
        self.with_mapped_array(
            "SVC4_TABLE",
            GENERATIONS * SVC4_BUCKETS * SVC4_WAYS as u32,
            |words| {
                let start = generation as usize * svc4.len();
                words[start..start + svc4.len()].copy_from_slice(&svc4);
            },
        )?;
        self.put_array("SVC_INFO", tables.service_info.iter().copied())?;
        self.put_array("RULES", tables.rules.iter().copied())?;

        // Every chunk that any set uses is written whole (zeros included) for every service,
        // so no entry of an earlier config in this slot can leak into this one.
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
        let nonzero: std::collections::HashMap<u32, u64> =
            tables.set_table.iter().copied().collect();
        let mut set_entries = Vec::new();
        for svc in 0..(tables.service_info.len() as u32) {
            let gs = gen32 * ms + svc;
            for &c in &chunks {
                for byte in 0..256u32 {
                    let i = set_table_index(gs, c, byte);
                    set_entries.push((i, nonzero.get(&i).copied().unwrap_or(0)));
                }
            }
        }
        self.put_array("SET_TBL", set_entries)?;

        let v4 = prefix_sets::compile_v4(&tables.prefix_sets_v4);
        let v6 = prefix_sets::compile_v6(&tables.prefix_sets_v6);
        let classes = match &memo {
            Some(m) if m.v4 == v4 => m.classes.clone(),
            _ => {
                stats.dir_rewritten = true;
                self.write_source_dir(generation, &v4)?
            }
        };
        let decisions = build_decisions(tables, &classes);
        let slot_services = gen32 * ms..(gen32 + 1) * ms;
        if let Some((gs, _)) = decisions.iter().find(|(gs, _)| !slot_services.contains(gs)) {
            return Err(DataplaneError::Map(format!(
                "service index {gs} is outside slot {generation} (tables compiled for another \
                 max_services than the loaded {ms})"
            )));
        }
        self.with_mapped_array("SRC4_DECIDE", GENERATIONS * ms * CLASSES, |words| {
            // The whole standby half: services beyond this config's count walk (and have no rules).
            let start = (gen32 * ms * CLASSES) as usize;
            words[start..start + (ms * CLASSES) as usize].fill(DECIDE_WALK as u64);
            for (gs, row) in &decisions {
                let base = (*gs * CLASSES) as usize;
                for (c, d) in row.iter().enumerate() {
                    words[base + c] = *d as u64;
                }
            }
        })?;
        {
            let key4 = |net: &ipnet::Ipv4Net| {
                let mut data = [0u8; 8];
                data[0] = generation;
                data[1..5].copy_from_slice(&net.addr().octets());
                Key::new(8 + net.prefix_len() as u32, data)
            };
            let (gone, changed) = trie_delta(memo.as_ref().map(|m| &m.v4[..]), &v4);
            let mut m: LpmTrie<&mut MapData, LpmData4, u64> =
                LpmTrie::try_from(self.map("SRC_V4")?).map_err(|e| map_err("SRC_V4", e))?;
            for net in &gone {
                let _ = m.remove(&key4(net));
            }
            for (net, bits) in &changed {
                m.insert(&key4(net), *bits, 0)
                    .map_err(|e| map_err("SRC_V4", e))?;
            }
            stats.trie_writes += gone.len() + changed.len();
        }
        {
            let key6 = |net: &ipnet::Ipv6Net| {
                let mut data = [0u8; 20];
                data[0] = generation;
                data[1..17].copy_from_slice(&net.addr().octets());
                Key::new(8 + net.prefix_len() as u32, data)
            };
            let (gone, changed) = trie_delta(memo.as_ref().map(|m| &m.v6[..]), &v6);
            let mut m: LpmTrie<&mut MapData, LpmData6, u64> =
                LpmTrie::try_from(self.map("SRC_V6")?).map_err(|e| map_err("SRC_V6", e))?;
            for net in &gone {
                let _ = m.remove(&key6(net));
            }
            for (net, bits) in &changed {
                m.insert(&key6(net), *bits, 0)
                    .map_err(|e| map_err("SRC_V6", e))?;
            }
            stats.trie_writes += gone.len() + changed.len();
        }
        self.put_array("PROFILES", tables.profiles.iter().copied())?;
        self.put_array("BACKENDS", tables.backends.iter().copied())?;
        let be_svc: Vec<(BackendServiceKey, u32)> = tables
            .backend_services
            .iter()
            .map(|k| {
                let idx = tables
                    .backends
                    .iter()
                    .find(|(_, b)| b.addr == k.addr)
                    .map(|(i, _)| i % MAX_BACKENDS)
                    .unwrap_or(NONE);
                (*k, idx)
            })
            .collect();
        self.put_hash("BE_SVC", be_svc)?;
        // Maglev tables (65,537 entries per service) through a memory mapping of the array.
        let mut tables_by_slot = Vec::new();
        for (svc, inputs) in &tables.maglev_inputs {
            if memo.as_ref().and_then(|m| m.maglev.get(svc)) == Some(inputs) {
                continue; // this slot already holds exactly this table
            }
            stats.maglev_tables += 1;
            let backends: Vec<anypop_common::maglev::MaglevBackend<'_>> = inputs
                .iter()
                .map(|(name, weight, _)| anypop_common::maglev::MaglevBackend {
                    name,
                    weight: *weight,
                })
                .collect();
            let table = anypop_common::maglev::build(&backends, MAGLEV_SIZE);
            let base = ((gen32 * ms + svc) * MAGLEV_SIZE) as usize;
            let values: Vec<u64> = table
                .iter()
                .map(|e| {
                    if *e == NONE {
                        NONE as u64
                    } else {
                        inputs[*e as usize].2 as u64
                    }
                })
                .collect();
            tables_by_slot.push((base, values));
        }
        self.with_mapped_array("MAGLEV", GENERATIONS * ms * MAGLEV_SIZE, |words| {
            for (base, values) in &tables_by_slot {
                words[*base..*base + values.len()].copy_from_slice(values);
            }
        })?;

        // The switch: one 8-byte value, read once per packet by the program.
        let old = self.control()?;
        let new = Control {
            active_gen: gen32,
            version: old.version.wrapping_add(1),
        };
        self.put_array("CONTROL", [(0u32, new)])?;
        self.slot_memo[generation as usize & 1] = Some(SlotMemo {
            v4,
            v6,
            classes,
            maglev: tables.maglev_inputs.iter().cloned().collect(),
        });
        Ok(Applied {
            generation: gen32,
            version: new.version,
            written: stats,
        })
    }

    /// Runs `fill` on a memory mapping of a `BPF_F_MMAPABLE` array of `entries` elements. Array
    /// elements are 8-byte aligned in the kernel, so each element is one `u64` word here (a `u32`
    /// value sits in its low half). One copy instead of a syscall per element.
    fn with_mapped_array(
        &mut self,
        name: &str,
        entries: u32,
        fill: impl FnOnce(&mut [u64]),
    ) -> Result<(), DataplaneError> {
        let fd = match self.map(name)? {
            aya::maps::Map::Array(d) => d.fd().as_fd().as_raw_fd(),
            _ => return Err(DataplaneError::Map(format!("{name} is not an array"))),
        };
        let len = entries as usize * 8;
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(DataplaneError::Map(format!(
                "mmap {name}: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: the mapping is `len` bytes, page aligned, and only this process writes the
        // standby part of it; the program reads the live part concurrently.
        let words = unsafe { std::slice::from_raw_parts_mut(base as *mut u64, entries as usize) };
        fill(words);
        unsafe { libc::munmap(base, len) };
        Ok(())
    }

    /// Fills the standby half of the DIR-24-8 source table and its class table (see
    /// `anypop_common::layout::DIR_WORDS`). The 16 MiB half is built in memory and copied through
    /// a memory mapping of the array: one copy instead of two million syscalls.
    /// Returns the class table (class → prefix-set bitmap).
    fn write_source_dir(
        &mut self,
        generation: u8,
        v4: &[(ipnet::Ipv4Net, u64)],
    ) -> Result<Vec<u64>, DataplaneError> {
        let (dir, classes) = build_source_dir(v4);
        {
            let mut m: Array<&mut MapData, u64> =
                Array::try_from(self.map("SRC4_CLASS")?).map_err(|e| map_err("SRC4_CLASS", e))?;
            for (i, mask) in classes.iter().enumerate() {
                m.set(generation as u32 * CLASSES + i as u32, mask, 0)
                    .map_err(|e| map_err("SRC4_CLASS", e))?;
            }
        }
        self.with_mapped_array("SRC4_DIR", GENERATIONS * DIR_WORDS, |words| {
            let start = generation as usize * DIR_WORDS as usize;
            words[start..start + dir.len()].copy_from_slice(&dir);
        })?;
        Ok(classes)
    }

    /// Removes the hash and trie entries of a slot (arrays are overwritten in place).
    fn clear_slot(&mut self, generation: u8, tries_too: bool) -> Result<(), DataplaneError> {
        let g32 = generation as u32;
        self.clear_hash::<VipKey, u32>("VIPS", |k| k.generation == generation)?;
        self.clear_hash::<ServiceKey, u32>("SERVICES", |k| k.generation == generation)?;
        self.clear_hash::<BackendServiceKey, u32>("BE_SVC", |k| k.generation == g32)?;
        if tries_too {
            self.clear_lpm::<LpmData4>("SRC_V4", |d| d[0] == generation)?;
            self.clear_lpm::<LpmData6>("SRC_V6", |d| d[0] == generation)?;
        }
        // Service infos beyond the new config's count must read as "no rules, no backends".
        let ms = self.sizes.max_services;
        self.put_array(
            "SVC_INFO",
            (0..ms).map(|s| (g32 * ms + s, ServiceInfo::default())),
        )?;
        Ok(())
    }

    /// Tells the program about one of our interfaces: its MAC (for packets handed to the kernel
    /// while a neighbour resolves) and that it may be a redirect target.
    pub fn add_interface(
        &mut self,
        ifindex: u32,
        mac: [u8; 6],
        mtu: u16,
    ) -> Result<(), DataplaneError> {
        {
            let mut m: HashMap<&mut MapData, u32, IfaceInfo> =
                HashMap::try_from(self.map("IFACES")?).map_err(|e| map_err("IFACES", e))?;
            m.insert(ifindex, IfaceInfo { mac, mtu }, 0)
                .map_err(|e| map_err("IFACES", e))?;
        }
        let mut d: DevMapHash<&mut MapData> =
            DevMapHash::try_from(self.map("TX_PORTS")?).map_err(|e| map_err("TX_PORTS", e))?;
        d.insert(ifindex, ifindex, None, 0)
            .map_err(|e| map_err("TX_PORTS", e))?;
        Ok(())
    }

    /// Attaches to an interface and pins the attachment at once (`link_<ifname>` in the pin
    /// directory), so that from this moment on the data plane survives the daemon however it
    /// ends (kill -9, OOM, panic). `allow_generic`: fall back to generic (SKB) mode when the
    /// driver cannot run XDP natively, instead of failing. When an earlier daemon left the data
    /// plane running here, its pinned attachment is adopted instead: this program replaces the
    /// old one on the same link in one step (`bpf_link_update`), in whatever mode it was
    /// attached. A defunct pin (its interface is gone) is replaced by a new attachment.
    pub fn attach(
        &mut self,
        ifname: &str,
        allow_generic: bool,
    ) -> Result<AttachMode, DataplaneError> {
        let pin = super::links::pin_path(&self.pin_dir, "xdp", ifname);
        let ifindex = super::links::ifindex_of(ifname)?;
        if let Some(fd) = super::links::adoptable(&pin, "edge", ifname, ifindex)? {
            let link = XdpLink::try_from(fd).map_err(|e| DataplaneError::Attach {
                ifname: ifname.to_owned(),
                detail: format!(
                    "the pinned attachment {} is not an XDP link: {e}",
                    pin.display()
                ),
            })?;
            let id =
                self.program_mut()
                    .attach_to_link(link)
                    .map_err(|e| DataplaneError::Attach {
                        ifname: ifname.to_owned(),
                        detail: format!("replacing the running program (bpf_link_update): {e}"),
                    })?;
            // Still pinned where it was: keep our descriptor beside the pin.
            let fd = self.take_fd_link(ifname, id)?;
            self.links.push((ifname.to_owned(), fd));
            tracing::info!(
                "interface {ifname}: adopted the running data plane (program replaced in place)"
            );
            return Ok(super::links::xdp_mode(ifname).unwrap_or(AttachMode::Native));
        }
        let prog = self.program_mut();
        let (id, mode) = match prog.attach(ifname, XdpMode::Driver) {
            Ok(id) => (id, AttachMode::Native),
            Err(native_err) => {
                if !allow_generic {
                    return Err(DataplaneError::NoNativeXdp {
                        ifname: ifname.to_owned(),
                        detail: format!("{native_err}"),
                    });
                }
                let id = prog
                    .attach(ifname, XdpMode::Skb)
                    .map_err(|e| DataplaneError::Attach {
                        ifname: ifname.to_owned(),
                        detail: format!("native: {native_err}; generic: {e}"),
                    })?;
                (id, AttachMode::Generic)
            }
        };
        let fd = self.take_fd_link(ifname, id)?;
        self.links
            .push((ifname.to_owned(), super::links::pin(fd, &pin)?));
        Ok(mode)
    }

    /// Takes attachment `id` out of aya's keeping (which would detach it on drop) as a plain
    /// bpf_link descriptor.
    fn take_fd_link(&mut self, ifname: &str, id: XdpLinkId) -> Result<FdLink, DataplaneError> {
        let link = self
            .program_mut()
            .take_link(id)
            .map_err(|e| map_err("take link", e))?;
        link.try_into().map_err(|e| DataplaneError::Attach {
            ifname: ifname.to_owned(),
            detail: format!(
                "this kernel attached XDP without a bpf_link ({e}); it cannot be left running"
            ),
        })
    }

    /// The pins of this program's attachments (they are pinned from the moment they exist).
    pub fn link_pins(&self) -> Vec<PathBuf> {
        self.links
            .iter()
            .map(|(ifname, _)| super::links::pin_path(&self.pin_dir, "xdp", ifname))
            .collect()
    }

    /// Detaches from every interface: removes the pins, then drops the last descriptors (the
    /// kernel detaches a link when nothing holds it any more).
    pub fn detach_all(&mut self) {
        for (ifname, link) in std::mem::take(&mut self.links) {
            let _ = std::fs::remove_file(super::links::pin_path(&self.pin_dir, "xdp", &ifname));
            drop(link);
        }
    }

    /// The kernel's run-time statistics of the program: total time spent in it and the number of
    /// runs. They only advance while statistics are enabled ([`enable_cost_stats`]).
    pub fn cost(&self) -> Result<(u64, u64), DataplaneError> {
        let info = self
            .program()
            .info()
            .map_err(|e| map_err("program info", e))?;
        Ok((info.run_time().as_nanos() as u64, info.run_count()))
    }

    /// Counters by verdict reason, summed over CPUs.
    pub fn snapshot(&mut self) -> Result<crate::telemetry::Snapshot, DataplaneError> {
        Ok(crate::telemetry::Snapshot {
            by_reason: self.counters("COUNTERS")?,
        })
    }

    /// Sum over CPUs of a per-CPU counter array.
    pub fn counters(&mut self, map: &str) -> Result<Vec<Counter>, DataplaneError> {
        let m: PerCpuArray<&mut MapData, Counter> =
            PerCpuArray::try_from(self.map(map)?).map_err(|e| map_err(map, e))?;
        crate::telemetry::sum_per_cpu(&m).map_err(|e| map_err(map, e))
    }

    /// Entries in the flow table and in the rate-limit bucket table (their fill levels).
    pub fn state_fill(&mut self) -> Result<(usize, usize), DataplaneError> {
        let flows = {
            let m: HashMap<&mut MapData, FlowKey, FlowValue> =
                HashMap::try_from(self.map("FLOWS")?).map_err(|e| map_err("FLOWS", e))?;
            m.keys().count()
        };
        let buckets = {
            let m: HashMap<&mut MapData, BucketKey, Bucket> =
                HashMap::try_from(self.map("BUCKETS")?).map_err(|e| map_err("BUCKETS", e))?;
            m.keys().count()
        };
        Ok((flows, buckets))
    }
}

/// How an XDP program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// The verifier's log is the only useful part of a load failure; keep its tail.
fn verifier_text(e: &aya::programs::ProgramError) -> String {
    let s = format!("{e:#}");
    if let aya::programs::ProgramError::LoadError { verifier_log, .. } = e {
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        return format!(
            "{s}\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    s
}

/// The DIR-24-8 words for one generation and its class table (class 0 = no set). Prefixes are
/// visited in (address, length) order, so each one is written after every prefix containing it
/// and overwrites only its own range with its (already unioned) sets. A /24 that holds longer
/// prefixes is marked [`CLASS_USE_LPM`]; so is every listed /24 when more than 254 distinct set
/// combinations exist.
pub fn build_source_dir(v4: &[(ipnet::Ipv4Net, u64)]) -> (Vec<u64>, Vec<u64>) {
    let mut dir = vec![0u64; DIR_WORDS as usize];
    let mut classes: Vec<u64> = vec![0];
    let mut class_of: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let distinct: std::collections::BTreeSet<u64> = v4.iter().map(|(_, b)| *b).collect();
    let too_many = distinct.len() > 254;
    let set_byte = |dir: &mut Vec<u64>, slash24: u32, class: u64| {
        let w = (slash24 >> 3) as usize;
        let shift = (slash24 & 7) * 8;
        dir[w] = (dir[w] & !(0xff << shift)) | (class << shift);
    };
    for (net, bits) in v4 {
        if net.prefix_len() > 24 {
            continue;
        }
        let class = if too_many {
            CLASS_USE_LPM
        } else {
            *class_of.entry(*bits).or_insert_with(|| {
                classes.push(*bits);
                (classes.len() - 1) as u64
            })
        };
        let start = u32::from(net.network()) >> 8;
        let count = 1u32 << (24 - net.prefix_len());
        for b in start..start + count {
            set_byte(&mut dir, b, class);
        }
    }
    for (net, _) in v4 {
        if net.prefix_len() > 24 {
            set_byte(&mut dir, u32::from(net.network()) >> 8, CLASS_USE_LPM);
        }
    }
    (dir, classes)
}

/// The `SRC4_DECIDE` rows of a generation: for every service (by generation-service index) and
/// every DIR-24-8 class (`classes[c]` = its prefix-set bitmap; class 0 = in no set), what the
/// service's rules decide for a source of that class (see `anypop_common::layout::DECIDE_WALK`).
/// It mirrors the program's rule walk: the rules the source can match are those naming one of its
/// sets plus those without a source condition; the first of them decides alone only if it has no
/// other condition. Classes without an entry (and [`CLASS_USE_LPM`]) walk.
pub fn build_decisions(tables: &EdgeTables, classes: &[u64]) -> Vec<(u32, Vec<u32>)> {
    let set_tbl: std::collections::HashMap<u32, u64> = tables.set_table.iter().copied().collect();
    let rules: std::collections::HashMap<u32, RuleEntry> = tables.rules.iter().copied().collect();
    let mut out = Vec::with_capacity(tables.service_info.len());
    for (gs, info) in &tables.service_info {
        let used = if info.rule_count >= 64 {
            u64::MAX
        } else {
            (1u64 << info.rule_count) - 1
        };
        // Rules without a protocol condition accept every protocol class.
        let any_protocol = info.proto_rules.iter().fold(u64::MAX, |a, b| a & b);
        let mut row = vec![DECIDE_WALK; CLASSES as usize];
        for (c, &sets) in classes.iter().enumerate().take(CLASS_USE_LPM as usize) {
            let mut src = info.any_src_rules;
            for chunk in 0..SET_CHUNKS {
                let byte = ((sets >> (chunk * 8)) & 0xff) as u32;
                if byte != 0 {
                    src |= set_tbl
                        .get(&set_table_index(*gs, chunk, byte))
                        .copied()
                        .unwrap_or(0);
                }
            }
            let candidates = src & used;
            row[c] = if candidates == 0 {
                DECIDE_NO_RULE
            } else {
                let slot = candidates.trailing_zeros();
                match rules.get(&(gs * RULES_PER_SERVICE + slot)) {
                    Some(r) if r.flags == 0 && (any_protocol >> slot) & 1 == 1 => {
                        decide_rule(slot, r.action == ACTION_DENY, r.rule_index)
                    }
                    _ => DECIDE_WALK,
                }
            };
        }
        out.push((*gs, row));
    }
    out
}

/// The standby half of `SVC4_TABLE` (`SVC4_BUCKETS` buckets of `SVC4_WAYS` words): every IPv4
/// service port and VIP of `tables`, placed by cuckoo insertion (an entry that finds both its
/// buckets full displaces one of the residents to that one's other bucket). A key listed twice
/// keeps its last service, as a hash map would.
pub fn build_service_table(tables: &EdgeTables) -> Result<Vec<u64>, DataplaneError> {
    let mut entries: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
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
        return Err(DataplaneError::Map(format!(
            "SVC4_TABLE: no place for service key {cur:#x} after 1000 moves (the table is \
             sized for 131,072 service ports)"
        )));
    }
    Ok(t)
}

/// Turns on the kernel's per-program run-time statistics while the returned descriptor lives:
/// what a program costs per packet is invisible to `top`. Statistics cost a little on every run,
/// so they are on only while someone is measuring.
pub fn enable_cost_stats() -> Result<std::os::fd::OwnedFd, DataplaneError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| map_err("BPF_ENABLE_STATS", e))
}

/// The number of CPU ids the kernel may run the program on: the flow cache holds a part per CPU.
fn possible_cpus() -> Result<u32, DataplaneError> {
    aya::util::nr_cpus()
        .map(|n| n as u32)
        .map_err(|(path, e)| DataplaneError::Load(format!("reading {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn class_at(dir: &[u64], addr: &str) -> u64 {
        let a = u32::from(addr.parse::<std::net::Ipv4Addr>().unwrap());
        (dir[(a >> 11) as usize] >> (((a >> 8) & 7) * 8)) & 0xff
    }

    #[test]
    fn dir_classes_follow_longest_prefix() {
        let v4 = prefix_sets::compile_v4(&[
            ("10.0.0.0/8".parse().unwrap(), 1),
            ("10.1.0.0/16".parse().unwrap(), 2),
            ("10.1.2.128/25".parse().unwrap(), 4),
        ]);
        let (dir, classes) = build_source_dir(&v4);
        assert_eq!(classes[class_at(&dir, "10.9.9.9") as usize], 1);
        assert_eq!(classes[class_at(&dir, "10.1.9.9") as usize], 3);
        assert_eq!(
            class_at(&dir, "10.1.2.1"),
            CLASS_USE_LPM,
            "a /24 holding a /25 asks the trie"
        );
        assert_eq!(class_at(&dir, "11.0.0.1"), 0);
        assert_eq!(class_at(&dir, "9.255.255.255"), 0);
    }

    #[test]
    fn decisions_follow_first_match() {
        let text = r#"
[[service]]
name = "game"
vip = "203.0.113.10"
protocol = "udp"
ports = "27015"
backends = ["be-1"]

[[service]]
name = "web"
vip = "203.0.113.10"
protocol = "tcp"
ports = "443"
backends = ["be-1"]

[[rule]]
name = "friends"
action = "allow"
src = ["198.18.5.0/24"]

[[rule]]
name = "blocklist"
action = "deny"
src = ["198.18.0.0/15"]

[[rule]]
name = "no-udp"
action = "deny"
services = ["web"]
protocol = "udp"
src = ["100.80.0.0/16"]

[[node]]
name = "pop-1"
role = "pop"
interfaces = ["a0"]
tunnel_source = "198.51.100.1"

[[node]]
name = "be-1"
role = "backend"
interface = "eth0"
address = "198.51.100.21"
"#;
        let net = crate::config::parse(text, "t.toml", Path::new(".")).unwrap();
        let t = crate::compile::compile_edge(&net, "pop-1", 1, 8).unwrap();
        let v4 = prefix_sets::compile_v4(&t.prefix_sets_v4);
        let (dir, classes) = build_source_dir(&v4);
        let rows = build_decisions(&t, &classes);
        let (game, web) = (&rows[0], &rows[1]);
        assert_eq!((game.0, web.0), (8, 9), "generation 1 × 8 services + index");
        let at = |row: &(u32, Vec<u32>), a: &str| row.1[class_at(&dir, a) as usize];
        // In no set: no rule can match.
        assert_eq!(at(game, "100.64.1.2"), DECIDE_NO_RULE);
        // The friends' /24 is also in the blocklist: "friends" (slot 0) comes first.
        assert_eq!(at(game, "198.18.5.9"), decide_rule(0, false, 0));
        assert_eq!(at(game, "198.18.7.7"), decide_rule(1, true, 1));
        assert_eq!(at(web, "198.18.7.7"), decide_rule(1, true, 1));
        // "no-udp" has a protocol condition: web walks; game has no such rule.
        assert_eq!(at(web, "100.80.1.1"), DECIDE_WALK);
        assert_eq!(at(game, "100.80.1.1"), DECIDE_NO_RULE);
    }

    /// What the program's `svc4_find` does, over a built table.
    fn svc4_find(t: &[u64], key: u64) -> Option<u64> {
        let (b1, b2) = svc4_buckets(key);
        [b1, b2].iter().find_map(|&b| {
            t[b as usize * SVC4_WAYS..(b as usize + 1) * SVC4_WAYS]
                .iter()
                .copied()
                .find(|e| e & SVC4_KEY_MASK == key)
        })
    }

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
        let table = build_service_table(&t).unwrap();
        assert_eq!(table.len(), (SVC4_BUCKETS as usize) * SVC4_WAYS);
        assert_eq!(table.iter().filter(|e| **e != 0).count(), 131_072 + 64 + 1);
        for (k, svc) in &t.services4 {
            let e = svc4_find(&table, svc4_key(k.addr, k.port, svc4_kind(k.proto)))
                .unwrap_or_else(|| panic!("{k:?} missing"));
            assert_eq!((e >> SVC4_SERVICE_SHIFT) & 0xfff, *svc as u64);
        }
        for v in &t.vips4 {
            assert!(svc4_find(&table, svc4_key(v.addr, 0, SVC4_KIND_VIP)).is_some());
        }
        // Neighbours of the keys are not found: another port, protocol or address.
        let a = t.vips4[3].addr;
        assert!(svc4_find(&table, svc4_key(a, 22_048, SVC4_KIND_UDP)).is_none());
        assert!(svc4_find(&table, svc4_key(a, 20_000, SVC4_KIND_TCP)).is_none());
        assert!(svc4_find(&table, svc4_key(a, 0, SVC4_KIND_ICMP)).is_none());
        let other = u32::from_ne_bytes([203, 0, 114, 3]);
        assert!(svc4_find(&table, svc4_key(other, 20_000, SVC4_KIND_UDP)).is_none());
        assert!(svc4_find(&table, svc4_key(other, 0, SVC4_KIND_VIP)).is_none());
    }

    #[test]
    fn too_many_combinations_fall_back_to_the_trie() {
        let input: Vec<(ipnet::Ipv4Net, u64)> = (0..300u32)
            .map(|i| {
                (
                    ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x0b00_0000 | (i << 8)), 24)
                        .unwrap(),
                    i as u64 + 1,
                )
            })
            .collect();
        let (dir, _) = build_source_dir(&prefix_sets::compile_v4(&input));
        assert_eq!(class_at(&dir, "11.0.5.1"), CLASS_USE_LPM);
        assert_eq!(class_at(&dir, "12.0.0.1"), 0);
    }
}
