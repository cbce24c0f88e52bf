//! The backend's programs (`decap` on XDP, `dsr` on TC egress) and their shared maps: load, fill,
//! attach, count.
use std::path::{Path, PathBuf};

use anypop_common::layout::{BackendSettings, Counter, ServiceKey4};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::FdLink,
        tc::{SchedClassifierLink, SchedClassifierLinkId},
        xdp::{XdpLink, XdpLinkId},
    },
};

use super::{DataplaneError, edge::AttachMode};
use crate::config::compile::BackendTables;

static BACKEND_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/backend"));

fn map_err(what: &str, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Map(format!("{what}: {e}"))
}

/// The loaded backend programs.
pub struct BackendPlane {
    pub ebpf: Ebpf,
    pub pin_dir: PathBuf,
    /// Our attachments: interface, decap's XDP link, dsr's TCX link.
    links: Option<(String, XdpLinkId, SchedClassifierLinkId)>,
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
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| DataplaneError::Map(format!("map {name} missing")))
    }

    /// Replaces the backend's tables (address, allowed POPs, services).
    pub fn apply(&mut self, t: &BackendTables) -> Result<(), DataplaneError> {
        {
            let mut m: HashMap<&mut MapData, ServiceKey4, u32> =
                HashMap::try_from(self.map("B_SERVICES")?).map_err(|e| map_err("B_SERVICES", e))?;
            let old: Vec<ServiceKey4> = m
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !t.services.contains(k))
                .collect();
            for k in &t.services {
                m.insert(k, 1, 0).map_err(|e| map_err("B_SERVICES", e))?;
            }
            for k in old {
                let _ = m.remove(&k);
            }
        }
        {
            let mut m: HashMap<&mut MapData, u32, u32> =
                HashMap::try_from(self.map("B_POPS")?).map_err(|e| map_err("B_POPS", e))?;
            let old: Vec<u32> = m
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !t.pops.contains(k))
                .collect();
            for k in &t.pops {
                m.insert(k, 1, 0).map_err(|e| map_err("B_POPS", e))?;
            }
            for k in old {
                let _ = m.remove(&k);
            }
        }
        let mut m: Array<&mut MapData, BackendSettings> =
            Array::try_from(self.map("B_SETTINGS")?).map_err(|e| map_err("B_SETTINGS", e))?;
        m.set(0, t.settings, 0)
            .map_err(|e| map_err("B_SETTINGS", e))
    }

    /// Attaches `decap` (native XDP; generic only if allowed) and `dsr` (TC egress, TCX). An
    /// attachment an earlier daemon left running is adopted: the new program replaces the old one
    /// on its pinned link in one step.
    pub fn attach(
        &mut self,
        ifname: &str,
        allow_generic: bool,
    ) -> Result<AttachMode, DataplaneError> {
        let attach_err = |detail: String| DataplaneError::Attach {
            ifname: ifname.to_owned(),
            detail,
        };
        let xdp_pin = super::links::pin_path(&self.pin_dir, "xdp", ifname);
        let tc_pin = super::links::pin_path(&self.pin_dir, "tc", ifname);
        let (mode, xdp_id) = {
            let p: &mut Xdp = self
                .ebpf
                .program_mut("decap")
                .expect("loaded")
                .try_into()
                .expect("xdp");
            if let Some(fd) = super::links::adoptable(&xdp_pin, "decap")? {
                let link = XdpLink::try_from(fd).map_err(|e| attach_err(format!("{e}")))?;
                let id = p
                    .attach_to_link(link)
                    .map_err(|e| attach_err(format!("bpf_link_update (decap): {e}")))?;
                tracing::info!("interface {ifname}: adopted the running decap (replaced in place)");
                (
                    super::links::xdp_mode(ifname).unwrap_or(AttachMode::Native),
                    id,
                )
            } else {
                match p.attach(ifname, XdpMode::Driver) {
                    Ok(id) => (AttachMode::Native, id),
                    Err(native) if allow_generic => {
                        let id = p
                            .attach(ifname, XdpMode::Skb)
                            .map_err(|e| attach_err(format!("native: {native}; generic: {e}")))?;
                        (AttachMode::Generic, id)
                    }
                    Err(native) => {
                        return Err(DataplaneError::NoNativeXdp {
                            ifname: ifname.to_owned(),
                            detail: format!("{native}"),
                        });
                    }
                }
            }
        };
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut("dsr")
            .expect("loaded")
            .try_into()
            .expect("tc");
        let tc_id = if let Some(fd) = super::links::adoptable(&tc_pin, "dsr")? {
            let link = SchedClassifierLink::try_from(fd).map_err(|e| attach_err(format!("{e}")))?;
            let id = p
                .attach_to_link(link)
                .map_err(|e| attach_err(format!("bpf_link_update (dsr): {e}")))?;
            tracing::info!("interface {ifname}: adopted the running dsr (replaced in place)");
            id
        } else {
            p.attach(ifname, TcAttachType::Egress)
                .map_err(|e| attach_err(format!("TC egress: {e}")))?
        };
        self.links = Some((ifname.to_owned(), xdp_id, tc_id));
        Ok(mode)
    }

    /// Pins both attachments, so the backend's data plane keeps running after this process.
    pub fn pin_links(&mut self) -> Result<Vec<PathBuf>, DataplaneError> {
        let Some((ifname, xdp_id, tc_id)) = self.links.take() else {
            return Ok(Vec::new());
        };
        let no_link = |e: aya::programs::links::LinkError| DataplaneError::Attach {
            ifname: ifname.clone(),
            detail: format!("attached without a bpf_link ({e}); it cannot be left running"),
        };
        let xdp: FdLink = {
            let p: &mut Xdp = self
                .ebpf
                .program_mut("decap")
                .expect("loaded")
                .try_into()
                .expect("xdp");
            p.take_link(xdp_id)
                .map_err(|e| map_err("take link", e))?
                .try_into()
                .map_err(no_link)?
        };
        let tc: FdLink = {
            let p: &mut SchedClassifier = self
                .ebpf
                .program_mut("dsr")
                .expect("loaded")
                .try_into()
                .expect("tc");
            p.take_link(tc_id)
                .map_err(|e| map_err("take link", e))?
                .try_into()
                .map_err(no_link)?
        };
        Ok(vec![
            super::links::pin(xdp, &super::links::pin_path(&self.pin_dir, "xdp", &ifname))?,
            super::links::pin(tc, &super::links::pin_path(&self.pin_dir, "tc", &ifname))?,
        ])
    }

    /// Removes the pins of our attachments, so that dropping the programs detaches them.
    pub fn unpin_links(&self) {
        if let Some((ifname, _, _)) = &self.links {
            for kind in ["xdp", "tc"] {
                let _ = std::fs::remove_file(super::links::pin_path(&self.pin_dir, kind, ifname));
            }
        }
    }

    /// Counters by verdict reason, summed over CPUs.
    pub fn snapshot(&mut self) -> Result<crate::telemetry::Snapshot, DataplaneError> {
        let m: PerCpuArray<&mut MapData, Counter> =
            PerCpuArray::try_from(self.map("B_COUNTERS")?).map_err(|e| map_err("B_COUNTERS", e))?;
        let by_reason = crate::telemetry::sum_per_cpu(&m).map_err(|e| map_err("B_COUNTERS", e))?;
        Ok(crate::telemetry::Snapshot { by_reason })
    }
}
