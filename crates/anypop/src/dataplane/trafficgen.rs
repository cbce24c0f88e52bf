//! The lab's traffic generator: crafted frames sent by BPF_PROG_TEST_RUN in live-frames mode out
//! of an interface, each given a random source by the `trafficgen` program on the way.
use std::{net::Ipv4Addr, time::Duration};

use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};

use super::DataplaneError;

static TRAFFICGEN_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/trafficgen"));

/// Mirrors `GenConfig` in the program.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct GenConfig {
    src_base: u32,
    src_mask: u32,
    random_sport: u32,
    _pad: u32,
}

unsafe impl aya::Pod for GenConfig {}

/// A loaded generator.
pub struct TrafficGen {
    ebpf: Ebpf,
}

impl TrafficGen {
    pub fn load() -> Result<TrafficGen, DataplaneError> {
        if TRAFFICGEN_OBJ.is_empty() {
            return Err(DataplaneError::NotBuilt);
        }
        let mut ebpf =
            Ebpf::load(TRAFFICGEN_OBJ).map_err(|e| DataplaneError::Load(format!("{e:#}")))?;
        let p: &mut Xdp = ebpf
            .program_mut("trafficgen")
            .ok_or_else(|| DataplaneError::Load("trafficgen missing".into()))?
            .try_into()
            .map_err(|e| DataplaneError::Load(format!("{e}")))?;
        p.load()
            .map_err(|e| DataplaneError::Verifier(format!("{e:#}")))?;
        Ok(TrafficGen { ebpf })
    }

    /// Sources random within `base/prefix_len` (a fixed source with /32); optional random source
    /// ports.
    pub fn configure(
        &mut self,
        base: Ipv4Addr,
        prefix_len: u8,
        random_sport: bool,
    ) -> Result<(), DataplaneError> {
        let mask = if prefix_len >= 32 {
            0
        } else {
            u32::MAX >> prefix_len
        };
        let cfg = GenConfig {
            src_base: u32::from(base),
            src_mask: mask,
            random_sport: random_sport as u32,
            _pad: 0,
        };
        let mut m: Array<&mut MapData, GenConfig> = Array::try_from(
            self.ebpf
                .map_mut("TG_CONFIG")
                .ok_or_else(|| DataplaneError::Map("TG_CONFIG missing".into()))?,
        )
        .map_err(|e| DataplaneError::Map(format!("{e}")))?;
        m.set(0, cfg, 0)
            .map_err(|e| DataplaneError::Map(format!("{e}")))
    }

    /// Sends `count` copies of `frame` (each re-randomised) out of `ifindex` (in the calling
    /// thread's namespace). Returns the time the kernel spent.
    pub fn send(&self, frame: &[u8], ifindex: u32, count: u32) -> Result<Duration, DataplaneError> {
        let p: &Xdp = self
            .ebpf
            .program("trafficgen")
            .expect("loaded")
            .try_into()
            .expect("xdp");
        let ctx = super::testrun::XdpMd::for_frame(frame.len(), ifindex);
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: None,
            ctx_in: Some(ctx.as_bytes()),
            ctx_out: None,
            repeat: count.max(1),
            attrs: TestRunAttrs::new().xdp_live_frames(64),
        };
        let start = std::time::Instant::now();
        p.test_run(opts)
            .map_err(|e| DataplaneError::TestRun(format!("{e:#}")))?;
        Ok(start.elapsed())
    }
}
