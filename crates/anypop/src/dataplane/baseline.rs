//! The baseline programs (XDP_PASS, XDP_DROP, MAC-swap XDP_TX): the floor every benchmark figure
//! is compared with, and a stand-in XDP program where a veth peer needs one.
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};

use super::DataplaneError;

static BASELINE_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline"));

/// The loaded baseline object with all three programs loaded into the kernel.
pub struct Baseline {
    pub ebpf: Ebpf,
}

impl Baseline {
    pub fn load() -> Result<Baseline, DataplaneError> {
        if BASELINE_OBJ.is_empty() {
            return Err(DataplaneError::NotBuilt);
        }
        let mut ebpf =
            Ebpf::load(BASELINE_OBJ).map_err(|e| DataplaneError::Load(format!("{e:#}")))?;
        {
            let p: &mut aya::programs::SchedClassifier = ebpf
                .program_mut("base_tc")
                .ok_or_else(|| DataplaneError::Load("base_tc missing".into()))?
                .try_into()
                .map_err(|e| DataplaneError::Load(format!("{e}")))?;
            p.load()
                .map_err(|e| DataplaneError::Verifier(format!("{e:#}")))?;
        }
        for name in ["base_pass", "base_drop", "base_drop_read", "base_tx"] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| DataplaneError::Load(format!("{name} missing")))?
                .try_into()
                .map_err(|e| DataplaneError::Load(format!("{e}")))?;
            p.load()
                .map_err(|e| DataplaneError::Verifier(format!("{e:#}")))?;
        }
        Ok(Baseline { ebpf })
    }

    /// One of `base_pass`, `base_drop`, `base_drop_read`, `base_tx`.
    pub fn program(&self, name: &str) -> &Xdp {
        self.ebpf
            .program(name)
            .expect("baseline program")
            .try_into()
            .expect("xdp")
    }

    /// The empty TC program.
    pub fn tc(&self) -> &aya::programs::SchedClassifier {
        self.ebpf
            .program("base_tc")
            .expect("baseline program")
            .try_into()
            .expect("tc")
    }

    /// Attaches a program natively (veth and real NICs with XDP support); detached on drop.
    pub fn attach(&mut self, name: &str, ifname: &str) -> Result<(), DataplaneError> {
        let p: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .expect("baseline program")
            .try_into()
            .expect("xdp");
        p.attach(ifname, XdpMode::Driver)
            .map_err(|e| DataplaneError::Attach {
                ifname: ifname.to_owned(),
                detail: format!("{e}"),
            })?;
        Ok(())
    }
}
