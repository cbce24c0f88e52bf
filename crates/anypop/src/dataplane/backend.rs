//! The backend's programs (`decap` on XDP, `dsr` on TC egress) and their shared maps: load, fill,
//! attach, count.
use std::path::{Path, PathBuf};

use anypop_common::layout::Counter;
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::FdLink,
        tc::{SchedClassifierLink, SchedClassifierLinkId},
        xdp::{XdpLink, XdpLinkId},
    },
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
            .map_err(|e| DataplaneError::Load(format!("{e:#}")))?;
        {
            let p: &mut Xdp = ebpf
                .program_mut("decap")
                .ok_or_else(|| DataplaneError::Load("program `decap` missing".into()))?
                .try_into()
                .map_err(|e| DataplaneError::Load(format!("{e}")))?;
            p.load()
                .map_err(|e| DataplaneError::Verifier(format!("{e:#}")))?;
        }
        {
            let p: &mut SchedClassifier = ebpf
                .program_mut("dsr")
                .ok_or_else(|| DataplaneError::Load("program `dsr` missing".into()))?
                .try_into()
                .map_err(|e| DataplaneError::Load(format!("{e}")))?;
            p.load()
                .map_err(|e| DataplaneError::Verifier(format!("{e:#}")))?;
        }
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
        let ifindex = super::links::ifindex_of(ifname)?;
        let xdp_pin = super::links::pin_path(&self.pin_dir, "xdp", ifname);
        let tc_pin = super::links::pin_path(&self.pin_dir, "tc", ifname);
        let (mode, xdp) = self.attach_decap(ifname, ifindex, &xdp_pin, allow_generic)?;
        let tc = self.attach_dsr(ifname, ifindex, &tc_pin)?;
        self.links = Some((ifname.to_owned(), xdp, tc));
        Ok(mode)
    }

    fn attach_decap(
        &mut self,
        ifname: &str,
        ifindex: u32,
        pin: &Path,
        allow_generic: bool,
    ) -> Result<(AttachMode, FdLink), DataplaneError> {
        let attach_err = |detail: String| DataplaneError::Attach {
            ifname: ifname.to_owned(),
            detail,
        };
        let adopted = super::links::adoptable(pin, "decap", ifname, ifindex)?;
        let p: &mut Xdp = self
            .ebpf
            .program_mut("decap")
            .expect("loaded")
            .try_into()
            .expect("xdp");
        let take = |p: &mut Xdp, id: XdpLinkId| -> Result<FdLink, DataplaneError> {
            p.take_link(id)
                .map_err(|source| DataplaneError::Program {
                    what: "take link",
                    source,
                })?
                .try_into()
                .map_err(|e| attach_err(format!("attached without a bpf_link ({e})")))
        };
        if let Some(fd) = adopted {
            let link = XdpLink::try_from(fd).map_err(|e| attach_err(format!("{e}")))?;
            let id = p
                .attach_to_link(link)
                .map_err(|e| attach_err(format!("bpf_link_update (decap): {e}")))?;
            tracing::info!("interface {ifname}: adopted the running decap (replaced in place)");
            let mode = super::links::xdp_mode(ifname).unwrap_or(AttachMode::Native);
            return Ok((mode, take(p, id)?));
        }
        let (id, mode) = match p.attach(ifname, XdpMode::Driver) {
            Ok(id) => (id, AttachMode::Native),
            Err(native) if allow_generic => {
                let id = p
                    .attach(ifname, XdpMode::Skb)
                    .map_err(|e| attach_err(format!("native: {native}; generic: {e}")))?;
                (id, AttachMode::Generic)
            }
            Err(native) => {
                return Err(DataplaneError::NoNativeXdp {
                    ifname: ifname.to_owned(),
                    detail: format!("{native}"),
                });
            }
        };
        let fd = take(p, id)?;
        Ok((mode, super::links::pin(fd, pin)?))
    }

    fn attach_dsr(
        &mut self,
        ifname: &str,
        ifindex: u32,
        pin: &Path,
    ) -> Result<FdLink, DataplaneError> {
        let attach_err = |detail: String| DataplaneError::Attach {
            ifname: ifname.to_owned(),
            detail,
        };
        let adopted = super::links::adoptable(pin, "dsr", ifname, ifindex)?;
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut("dsr")
            .expect("loaded")
            .try_into()
            .expect("tc");
        let take = |p: &mut SchedClassifier,
                    id: SchedClassifierLinkId|
         -> Result<FdLink, DataplaneError> {
            p.take_link(id)
                .map_err(|source| DataplaneError::Program {
                    what: "take link",
                    source,
                })?
                .try_into()
                .map_err(|e| attach_err(format!("attached without a bpf_link ({e})")))
        };
        if let Some(fd) = adopted {
            let link = SchedClassifierLink::try_from(fd).map_err(|e| attach_err(format!("{e}")))?;
            let id = p
                .attach_to_link(link)
                .map_err(|e| attach_err(format!("bpf_link_update (dsr): {e}")))?;
            tracing::info!("interface {ifname}: adopted the running dsr (replaced in place)");
            return take(p, id);
        }
        let id = p
            .attach(ifname, TcAttachType::Egress)
            .map_err(|e| attach_err(format!("TC egress: {e}")))?;
        let fd = take(p, id)?;
        super::links::pin(fd, pin)
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
