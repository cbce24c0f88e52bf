//! The backend's programs (`decap` on XDP, `dsr` on TC egress) and their shared maps: load, fill,
//! attach, count.
use std::path::{Path, PathBuf};

use anypop_common::layout::Counter;
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::{SchedClassifier, Xdp, links::FdLink},
};

use super::{
    DataplaneError,
    edge::AttachMode,
    maps::{self, map_err},
};
use crate::compile::BackendTables;

static BACKEND_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/backend"));

/// The loaded backend programs.
pub struct BackendPlane {
    pub ebpf: Ebpf,
    pub pin_dir: PathBuf,
    /// Our attachments: interface, decap's XDP link, dsr's TCX link — each pinned the moment it
    /// exists, so the backend's data plane outlives this process however it ends.
    links: Option<(String, FdLink, FdLink)>,
}

impl BackendPlane {
    /// Loads both programs, with their maps pinned in `pin_dir`.
    pub fn load(pin_dir: &Path) -> Result<BackendPlane, DataplaneError> {
        if BACKEND_OBJ.is_empty() {
            return Err(DataplaneError::NotBuilt);
        }
        std::fs::create_dir_all(pin_dir).map_err(|e| DataplaneError::PinDir {
            path: pin_dir.to_owned(),
            source: e,
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(BACKEND_OBJ)
            .map_err(DataplaneError::Load)?;
        super::load_program::<Xdp>(&mut ebpf, "decap")?;
        super::load_program::<SchedClassifier>(&mut ebpf, "dsr")?;
        Ok(BackendPlane {
            ebpf,
            pin_dir: pin_dir.to_owned(),
            links: None,
        })
    }

    pub fn decap(&self) -> &Xdp {
        self.ebpf
            .program("decap")
            .expect("loaded")
            .try_into()
            .expect("xdp")
    }

    pub fn dsr(&self) -> &SchedClassifier {
        self.ebpf
            .program("dsr")
            .expect("loaded")
            .try_into()
            .expect("tc")
    }

    fn map(&mut self, name: &str) -> Result<&mut aya::maps::Map, DataplaneError> {
        super::maps::map(&mut self.ebpf, name)
    }

    /// Replaces the backend's tables (address, allowed POPs, services).
    pub fn apply(&mut self, t: &BackendTables) -> Result<(), DataplaneError> {
        maps::set_hash_keys(&mut self.ebpf, "B_SERVICES", &t.services, 1u32)?;
        maps::set_hash_keys(&mut self.ebpf, "B_POPS", &t.pops, 1u32)?;
        maps::put_array(&mut self.ebpf, "B_SETTINGS", [(0, t.settings)])
    }

    /// Attaches `decap` (native XDP; generic only if allowed) and `dsr` (TC egress, TCX), and
    /// pins each attachment at once. An attachment an earlier daemon left running is adopted:
    /// the new program replaces the old one on its pinned link in one step. A defunct pin (its
    /// interface is gone) is replaced by a new attachment.
    pub fn attach(
        &mut self,
        ifname: &str,
        allow_generic: bool,
    ) -> Result<AttachMode, DataplaneError> {
        let xdp_pin = super::links::pin_path(&self.pin_dir, "xdp", ifname);
        let tc_pin = super::links::pin_path(&self.pin_dir, "tc", ifname);
        let decap: &mut Xdp = self
            .ebpf
            .program_mut("decap")
            .expect("loaded")
            .try_into()
            .expect("xdp");
        let (mode, xdp) =
            super::links::attach_xdp(decap, "decap", ifname, &xdp_pin, allow_generic)?;
        let dsr: &mut SchedClassifier = self
            .ebpf
            .program_mut("dsr")
            .expect("loaded")
            .try_into()
            .expect("tc");
        let tc = super::links::attach_tc(dsr, "dsr", ifname, &tc_pin)?;
        self.links = Some((ifname.to_owned(), xdp, tc));
        Ok(mode)
    }

    /// The pins of our attachments (they are pinned from the moment they exist).
    pub fn link_pins(&self) -> Vec<PathBuf> {
        match &self.links {
            Some((ifname, _, _)) => ["xdp", "tc"]
                .iter()
                .map(|k| super::links::pin_path(&self.pin_dir, k, ifname))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Detaches both programs: removes the pins, then drops the last descriptors.
    pub fn detach_all(&mut self) {
        if let Some((ifname, xdp, tc)) = self.links.take() {
            for kind in ["xdp", "tc"] {
                let _ = std::fs::remove_file(super::links::pin_path(&self.pin_dir, kind, &ifname));
            }
            drop((xdp, tc));
        }
    }

    /// Counters by verdict reason, summed over CPUs.
    pub fn snapshot(&mut self) -> Result<super::counters::Snapshot, DataplaneError> {
        let m: PerCpuArray<&mut MapData, Counter> =
            PerCpuArray::try_from(self.map("B_COUNTERS")?).map_err(map_err("B_COUNTERS"))?;
        let by_reason = super::counters::sum_per_cpu(&m).map_err(map_err("B_COUNTERS"))?;
        Ok(super::counters::Snapshot { by_reason })
    }
}
