//! The lab's traffic generator: crafted frames sent by BPF_PROG_TEST_RUN in live-frames mode out
//! of an interface, each given a random source by the `trafficgen` program on the way.
use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};

use super::DataplaneError;

static TRAFFICGEN_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/trafficgen"));

/// Mirrors `GenConfig` in the program.
#[repr(C)]
#[derive(Clone, Copy)]
struct GenConfig {
    src_base: u32,
    src_mask: u32,
    random_sport: u32,
    template_len: u32,
    template: [u8; TEMPLATE_MAX],
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            src_base: 0,
            src_mask: 0,
            random_sport: 0,
            template_len: 0,
            template: [0; TEMPLATE_MAX],
        }
    }
}

/// Mirrors `TEMPLATE_MAX` in the program: frames up to this long are restored before each send.
const TEMPLATE_MAX: usize = 128;

unsafe impl aya::Pod for GenConfig {}

/// What a flood is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodKind {
    /// UDP datagrams to the destination port.
    Udp,
    /// TCP SYNs to the destination port.
    TcpSyn,
    /// ICMP echo requests.
    IcmpEcho,
}

impl std::str::FromStr for FloodKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "udp" => Ok(FloodKind::Udp),
            "syn" | "tcp" | "tcp-syn" => Ok(FloodKind::TcpSyn),
            "icmp" => Ok(FloodKind::IcmpEcho),
            other => Err(format!(
                "unknown flood kind {other:?}: use udp, syn or icmp"
            )),
        }
    }
}

/// One flood: the frame the generator repeats and what it randomises per frame.
#[derive(Clone, Debug)]
pub struct Flood {
    pub kind: FloodKind,
    /// Source addresses: random within `src/src_prefix_len` (fixed with /32).
    pub src: Ipv4Addr,
    pub src_prefix_len: u8,
    /// Source port (random per frame with `random_sport`).
    pub sport: u16,
    pub random_sport: bool,
    pub dst: Ipv4Addr,
    pub dport: u16,
    /// Bytes after the L4 header (UDP and ICMP).
    pub payload_len: usize,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

impl Flood {
    /// The Ethernet frame sent for this flood (before per-frame randomisation).
    pub fn frame(&self) -> Vec<u8> {
        let (proto, l4): (u8, Vec<u8>) = match self.kind {
            FloodKind::Udp => {
                let mut u = Vec::with_capacity(8 + self.payload_len);
                u.extend_from_slice(&self.sport.to_be_bytes());
                u.extend_from_slice(&self.dport.to_be_bytes());
                u.extend_from_slice(&((8 + self.payload_len) as u16).to_be_bytes());
                u.extend_from_slice(&[0, 0]);
                u.resize(8 + self.payload_len, 0x5a);
                (17, u)
            }
            FloodKind::TcpSyn => {
                let mut t = vec![0u8; 20];
                t[0..2].copy_from_slice(&self.sport.to_be_bytes());
                t[2..4].copy_from_slice(&self.dport.to_be_bytes());
                t[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
                t[12] = 5 << 4;
                t[13] = 0x02;
                t[14..16].copy_from_slice(&64240u16.to_be_bytes());
                let c = l4_checksum(self.src, self.dst, 6, &t);
                t[16..18].copy_from_slice(&c.to_be_bytes());
                (6, t)
            }
            FloodKind::IcmpEcho => {
                let mut i = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
                i.resize(8 + self.payload_len, 0x5a);
                let c = internet_checksum(&i);
                i[2..4].copy_from_slice(&c.to_be_bytes());
                (1, i)
            }
        };
        let mut f = Vec::with_capacity(34 + l4.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        ip[6] = 0x40; // DF, as most floods and every game client send
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        let c = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

/// The internet checksum (RFC 1071) of `b`.
fn internet_checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// TCP/UDP checksum over the IPv4 pseudo-header and `l4` (whose checksum field is zero).
fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> u16 {
    let mut v = Vec::with_capacity(12 + l4.len());
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.extend_from_slice(&[0, proto]);
    v.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    v.extend_from_slice(l4);
    internet_checksum(&v)
}

/// How fast and how long a flood runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pace {
    /// Frames per second; None: as fast as the kernel builds them.
    pub pps: Option<u64>,
    /// Stop after this many frames; None: until the stop flag.
    pub max_frames: Option<u64>,
}

/// Every test-run call costs the kernel a fixed ~10-30 ms here (setting up and tearing down its
/// frame pool waits for an RCU grace period), whatever the number of frames: so a paced flood
/// sends one burst per [`PACE_PERIOD`] and a flat-out flood sends large bursts.
const PACE_PERIOD: Duration = Duration::from_millis(100);
/// Frames per call when flooding flat out (≈ 0.1 s of the generator's ≈ 2 Mpps): amortises the
/// fixed cost and still honours the stop flag quickly.
const FLAT_OUT_BURST: u64 = 262_144;

/// A loaded generator.
pub struct TrafficGen {
    ebpf: Ebpf,
    /// What the program's config map holds.
    cfg: GenConfig,
}

impl TrafficGen {
    pub fn load() -> Result<TrafficGen, DataplaneError> {
        if TRAFFICGEN_OBJ.is_empty() {
            return Err(DataplaneError::NotBuilt);
        }
        let mut ebpf = Ebpf::load(TRAFFICGEN_OBJ).map_err(DataplaneError::Load)?;
        super::load_program::<Xdp>(&mut ebpf, "trafficgen")?;
        Ok(TrafficGen {
            ebpf,
            cfg: GenConfig::default(),
        })
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
        self.cfg.src_base = u32::from(base);
        self.cfg.src_mask = mask;
        self.cfg.random_sport = random_sport as u32;
        self.write_config()
    }

    fn write_config(&mut self) -> Result<(), DataplaneError> {
        let mut m: Array<&mut MapData, GenConfig> =
            Array::try_from(self.ebpf.map_mut("TG_CONFIG").ok_or_else(|| {
                DataplaneError::MapMissing {
                    map: "TG_CONFIG".into(),
                }
            })?)
            .map_err(super::maps::map_err("TG_CONFIG"))?;
        m.set(0, self.cfg, 0)
            .map_err(super::maps::map_err("TG_CONFIG"))
    }

    /// Sends `flood` out of `ifindex` (in the calling thread's namespace) at `pace` until it has
    /// sent `pace.max_frames` or `stop` is set; `sent` counts frames as they go, so a live view
    /// can show the offered rate. Returns the number sent.
    pub fn flood(
        &mut self,
        flood: &Flood,
        ifindex: u32,
        pace: Pace,
        stop: &AtomicBool,
        sent: &AtomicU64,
    ) -> Result<u64, DataplaneError> {
        self.configure(flood.src, flood.src_prefix_len, flood.random_sport)?;
        let frame = flood.frame();
        let start = Instant::now();
        let mut done = 0u64;
        let burst = pace.pps.map_or(FLAT_OUT_BURST, |pps| {
            (pps as f64 * PACE_PERIOD.as_secs_f64()).ceil().max(1.0) as u64
        });
        while !stop.load(Ordering::Relaxed) {
            let left = pace.max_frames.map_or(burst, |m| m.saturating_sub(done));
            if left == 0 {
                break;
            }
            if let Some(pps) = pace.pps {
                // Sleep until this burst is due.
                let due = start + Duration::from_secs_f64(done as f64 / pps.max(1) as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep((due - now).min(Duration::from_millis(50)));
                    continue;
                }
            }
            let n = left.min(burst).min(u32::MAX as u64);
            self.send(&frame, ifindex, n as u32)?;
            done += n;
            sent.fetch_add(n, Ordering::Relaxed);
        }
        Ok(done)
    }

    /// Sends `count` copies of `frame` (each re-randomised) out of `ifindex` (in the calling
    /// thread's namespace). Returns the time the kernel spent.
    ///
    /// Frames up to 128 bytes are rewritten from `frame` before each send: a receiver that
    /// changes frames in place (across a veth it gets our very pages) cannot corrupt later ones.
    pub fn send(
        &mut self,
        frame: &[u8],
        ifindex: u32,
        count: u32,
    ) -> Result<Duration, DataplaneError> {
        let len = if frame.len() <= TEMPLATE_MAX {
            frame.len()
        } else {
            0
        };
        if self.cfg.template_len as usize != len || self.cfg.template[..len] != frame[..len] {
            self.cfg.template[..len].copy_from_slice(&frame[..len]);
            self.cfg.template_len = len as u32;
            self.write_config()?;
        }
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
        p.test_run(opts).map_err(DataplaneError::TestRun)?;
        Ok(start.elapsed())
    }
}
