//! The POP's `edge` XDP program: load it with maps sized from config and pinned under the node's
//! directory, write config generations into its maps, attach it to interfaces.
//!
//! A generation is compiled whole ([`EdgeImage`], pure: `crate::compile`); this module only
//! diffs it against what the standby slot last held, writes it and switches.
use std::{
    collections::HashMap as StdHashMap,
    path::{Path, PathBuf},
};

use anypop_common::layout::*;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, xdp::DevMapHash},
    programs::{Xdp, links::FdLink},
};

use super::{
    DataplaneError,
    maps::{self, map_err},
};
use crate::compile::{EdgeImage, EdgeTables, LpmKey, MaglevInput};

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
    v4: Vec<(LpmKey<LpmData4>, u64)>,
    v6: Vec<(LpmKey<LpmData6>, u64)>,
    /// Maglev inputs per service index.
    maglev: StdHashMap<u32, Vec<MaglevInput>>,
}

impl SlotMemo {
    /// What writing `image` leaves in its slot.
    fn of(image: EdgeImage) -> SlotMemo {
        SlotMemo {
            v4: image.src_v4,
            v6: image.src_v6,
            maglev: image
                .maglev
                .into_iter()
                .map(|t| (t.service, t.inputs))
                .collect(),
        }
    }
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
        let mut ebpf = loader.load(EDGE_OBJ).map_err(DataplaneError::Load)?;
        super::load_program::<Xdp>(&mut ebpf, "edge")?;
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
        maps::map(&mut self.ebpf, name)
    }

    /// The live generation slot and its switch counter.
    pub fn control(&mut self) -> Result<Control, DataplaneError> {
        let m: Array<&mut MapData, Control> =
            Array::try_from(self.map("CONTROL")?).map_err(map_err("CONTROL"))?;
        m.get(&0, 0).map_err(map_err("CONTROL"))
    }

    /// The slot a new config is written to: the one that is not live.
    pub fn standby_generation(&mut self) -> Result<u8, DataplaneError> {
        Ok((1 - (self.control()?.active_gen & 1)) as u8)
    }

    /// Compiles `tables` (for the standby slot) into the image of a generation for this
    /// program's map sizes, writes it into the maps, then makes it live with one store to
    /// `CONTROL`. The live slot is not touched until that store, so a failure anywhere before it
    /// leaves the running config as it was.
    pub fn apply(&mut self, tables: &EdgeTables) -> Result<Applied, DataplaneError> {
        let standby = self.standby_generation()?;
        if tables.generation != standby {
            return Err(DataplaneError::WrongSlot {
                compiled: tables.generation,
                standby,
            });
        }
        let image = EdgeImage::build(tables, self.sizes.max_services)?;
        self.write(image)
    }

    /// Writes `image` into its (standby) slot and switches to it. What the slot last held (its
    /// memo) turns the big tables into diffs; the memo is taken first and put back only on
    /// success, so after a failure the slot is unknown and rewritten whole the next time.
    fn write(&mut self, image: EdgeImage) -> Result<Applied, DataplaneError> {
        let generation = image.generation;
        let memo = self.slot_memo[generation as usize & 1].take();
        self.clear_slot(generation, memo.is_none())?;
        self.write_tables(&image)?;
        let old = memo.as_ref();
        let dir_rewritten = self.write_source_dir(&image, old)?;
        let (v4, v6) = (old.map(|m| &m.v4[..]), old.map(|m| &m.v6[..]));
        let trie_writes = maps::write_trie(&mut self.ebpf, "SRC_V4", v4, &image.src_v4)?
            + maps::write_trie(&mut self.ebpf, "SRC_V6", v6, &image.src_v6)?;
        let written = WriteStats {
            dir_rewritten,
            trie_writes,
            maglev_tables: self.write_maglev(&image, old)?,
        };
        // The switch: one 8-byte value, read once per packet by the program.
        let control = self.control()?;
        let new = Control {
            active_gen: generation as u32,
            version: control.version.wrapping_add(1),
        };
        maps::put_array(&mut self.ebpf, "CONTROL", [(0u32, new)])?;
        self.slot_memo[generation as usize & 1] = Some(SlotMemo::of(image));
        Ok(Applied {
            generation: generation as u32,
            version: new.version,
            written,
        })
    }

    /// Writes every table of `image` that is rewritten whole each time.
    fn write_tables(&mut self, image: &EdgeImage) -> Result<(), DataplaneError> {
        let g = image.generation;
        let ebpf = &mut self.ebpf;
        maps::put_array(ebpf, "SETTINGS", [(g as u32, image.settings)])?;
        maps::put_hash(ebpf, "VIPS", image.vips.iter().copied())?;
        maps::put_hash(ebpf, "SERVICES", image.services.iter().copied())?;
        maps::with_mapped_half(ebpf, "SVC4_TABLE", g, image.svc4_table.len(), |half| {
            half.copy_from_slice(&image.svc4_table)
        })?;
        maps::put_array(ebpf, "SVC_INFO", image.service_info.iter().copied())?;
        maps::put_array(ebpf, "RULES", image.rules.iter().copied())?;
        maps::put_array(ebpf, "SET_TBL", image.set_table.iter().copied())?;
        maps::with_mapped_half(ebpf, "SRC4_DECIDE", g, image.decide.len(), |half| {
            for (w, d) in half.iter_mut().zip(&image.decide) {
                *w = *d as u64;
            }
        })?;
        maps::put_array(ebpf, "PROFILES", image.profiles.iter().copied())?;
        maps::put_array(ebpf, "BACKENDS", image.backends.iter().copied())?;
        maps::put_hash(ebpf, "BE_SVC", image.backend_services.iter().copied())
    }

    /// Writes the DIR-24-8 source table's half and its class table, unless the slot already
    /// holds them (the same IPv4 prefixes with the same sets). Returns whether it wrote them.
    fn write_source_dir(
        &mut self,
        image: &EdgeImage,
        memo: Option<&SlotMemo>,
    ) -> Result<bool, DataplaneError> {
        if memo.is_some_and(|m| m.v4 == image.src_v4) {
            return Ok(false);
        }
        let g = image.generation;
        let classes = image.source_dir.classes.iter().enumerate();
        let ebpf = &mut self.ebpf;
        maps::put_array(
            ebpf,
            "SRC4_CLASS",
            classes.map(|(i, c)| (g as u32 * CLASSES + i as u32, *c)),
        )?;
        maps::with_mapped_half(ebpf, "SRC4_DIR", g, DIR_WORDS as usize, |half| {
            image.source_dir.fill(half)
        })?;
        Ok(true)
    }

    /// Builds and writes the Maglev tables whose inputs differ from what the slot holds.
    /// Returns how many it wrote.
    fn write_maglev(
        &mut self,
        image: &EdgeImage,
        memo: Option<&SlotMemo>,
    ) -> Result<usize, DataplaneError> {
        let tables: Vec<(usize, Vec<u32>)> = image
            .maglev
            .iter()
            .filter(|t| memo.and_then(|m| m.maglev.get(&t.service)) != Some(&t.inputs))
            .map(|t| (t.offset(), t.entries()))
            .collect();
        let half = (image.max_services * MAGLEV_SIZE) as usize;
        maps::with_mapped_half(&mut self.ebpf, "MAGLEV", image.generation, half, |words| {
            for (offset, entries) in &tables {
                for (w, e) in words[*offset..*offset + entries.len()]
                    .iter_mut()
                    .zip(entries)
                {
                    *w = *e as u64;
                }
            }
        })?;
        Ok(tables.len())
    }

    /// Removes the hash entries of a slot, and its trie entries if `tries_too` (arrays are
    /// overwritten in place).
    fn clear_slot(&mut self, generation: u8, tries_too: bool) -> Result<(), DataplaneError> {
        let g32 = generation as u32;
        let ebpf = &mut self.ebpf;
        maps::clear_hash::<VipKey, u32>(ebpf, "VIPS", |k| k.generation == generation)?;
        maps::clear_hash::<ServiceKey, u32>(ebpf, "SERVICES", |k| k.generation == generation)?;
        maps::clear_hash::<BackendServiceKey, u32>(ebpf, "BE_SVC", |k| k.generation == g32)?;
        if tries_too {
            maps::clear_lpm::<LpmData4>(ebpf, "SRC_V4", |d| d[0] == generation)?;
            maps::clear_lpm::<LpmData6>(ebpf, "SRC_V6", |d| d[0] == generation)?;
        }
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
                HashMap::try_from(self.map("IFACES")?).map_err(map_err("IFACES"))?;
            m.insert(ifindex, IfaceInfo { mac, mtu }, 0)
                .map_err(map_err("IFACES"))?;
        }
        let mut d: DevMapHash<&mut MapData> =
            DevMapHash::try_from(self.map("TX_PORTS")?).map_err(map_err("TX_PORTS"))?;
        d.insert(ifindex, ifindex, None, 0)
            .map_err(|source| DataplaneError::XdpMap {
                map: "TX_PORTS".into(),
                source,
            })?;
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
        let (mode, fd) =
            super::links::attach_xdp(self.program_mut(), "edge", ifname, &pin, allow_generic)?;
        self.links.push((ifname.to_owned(), fd));
        Ok(mode)
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
            .map_err(|source| DataplaneError::Program {
                what: "reading the program's info",
                source,
            })?;
        Ok((info.run_time().as_nanos() as u64, info.run_count()))
    }

    /// Counters by verdict reason, summed over CPUs.
    pub fn snapshot(&mut self) -> Result<super::counters::Snapshot, DataplaneError> {
        Ok(super::counters::Snapshot {
            by_reason: self.counters("COUNTERS")?,
        })
    }

    /// Sum over CPUs of a per-CPU counter array.
    pub fn counters(&mut self, map: &str) -> Result<Vec<Counter>, DataplaneError> {
        let m: PerCpuArray<&mut MapData, Counter> =
            PerCpuArray::try_from(self.map(map)?).map_err(map_err(map))?;
        super::counters::sum_per_cpu(&m).map_err(map_err(map))
    }

    /// Entries in the flow table and in the rate-limit bucket table (their fill levels).
    pub fn state_fill(&mut self) -> Result<(usize, usize), DataplaneError> {
        let flows = {
            let m: HashMap<&mut MapData, FlowKey, FlowValue> =
                HashMap::try_from(self.map("FLOWS")?).map_err(map_err("FLOWS"))?;
            m.keys().count()
        };
        let buckets = {
            let m: HashMap<&mut MapData, BucketKey, Bucket> =
                HashMap::try_from(self.map("BUCKETS")?).map_err(map_err("BUCKETS"))?;
            m.keys().count()
        };
        Ok((flows, buckets))
    }
}

// How an attachment ended up is the links' business; its name stays reachable here.
pub use super::links::AttachMode;

/// Turns on the kernel's per-program run-time statistics while the returned descriptor lives:
/// what a program costs per packet is invisible to `top`. Statistics cost a little on every run,
/// so they are on only while someone is measuring.
pub fn enable_cost_stats() -> Result<std::os::fd::OwnedFd, DataplaneError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(DataplaneError::Stats)
}

/// The number of CPU ids the kernel may run the program on: the flow cache holds a part per CPU.
fn possible_cpus() -> Result<u32, DataplaneError> {
    aya::util::nr_cpus()
        .map(|n| n as u32)
        .map_err(|(path, source)| DataplaneError::PossibleCpus {
            path: path.to_owned(),
            source,
        })
}
