//! The baseline programs (XDP_PASS, XDP_DROP, MAC-swap XDP_TX): the floor every benchmark figure
//! is compared with, and a stand-in XDP program where a veth peer needs one.
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};

use super::DataplaneError;

pub(crate) static BASELINE_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline"));

/// The loaded baseline object with all three programs loaded into the kernel.
pub struct Baseline {
    pub ebpf: Ebpf,
}

impl Baseline {
    pub fn load() -> Result<Baseline, DataplaneError> {
        if BASELINE_OBJ.is_empty() {
            return Err(DataplaneError::NotBuilt);
        }
        let mut ebpf = Ebpf::load(BASELINE_OBJ).map_err(DataplaneError::Load)?;
        super::load_program::<aya::programs::SchedClassifier>(&mut ebpf, "base_tc")?;
        for name in ["base_pass", "base_drop", "base_drop_read", "base_tx"] {
            super::load_program::<Xdp>(&mut ebpf, name)?;
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
        p.attach(ifname, XdpMode::Driver).map_err(|e| {
            super::links::attach_error(ifname, "attaching XDP in native mode failed", e)
        })?;
        Ok(())
    }
}
