//! `anypop capture`: packets sampled by the running edge program, each written to a pcapng file
//! with its verdict, reason, rule and service in the packet comment (Wireshark and
//! `tshark -r FILE -T fields -e frame.comment` show it).
//!
//! The program samples after its verdict, only the reasons (and service) asked for, at most a
//! given number per second per CPU, into a ring buffer (see `anypop-ebpf/src/capture.rs`). The
//! request lives in the pinned `CAPTURE` map; it is cleared again however the capture ends.
use std::{
    borrow::Cow,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, anyhow, bail};
use anypop_common::{
    layout::{CaptureConfig, CaptureRecord, NONE},
    verdict::Reason,
};
use aya::maps::{Array, Map, MapData, RingBuf};
use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};

use super::trace::{Names, action_name};

/// What to capture.
#[derive(Clone, Debug)]
pub struct CaptureRequest {
    /// Verdict reasons to sample (empty: all).
    pub reasons: Vec<Reason>,
    /// Only this service (by name; needs the names from the network file).
    pub service: Option<String>,
    /// Stop after this many packets.
    pub count: u64,
    /// Stop after this long (None: only by count or Ctrl-C).
    pub duration: Option<Duration>,
    /// Samples per second, over all CPUs.
    pub rate: u32,
}

/// Clears the capture request when dropped: a capture that ends by error or Ctrl-C never leaves
/// the data plane sampling.
struct Off(Array<MapData, CaptureConfig>);

impl Drop for Off {
    fn drop(&mut self) {
        let _ = self.0.set(0, CaptureConfig::default(), 0);
    }
}

/// The pcapng comment of one sample.
pub fn comment(r: &CaptureRecord, names: &Names) -> String {
    let reason = Reason::from_u32(r.reason).map_or("?", |x| x.name());
    let mut s = format!("verdict={} reason={reason}", action_name(r.action));
    let name = |v: &[String], i: u32| {
        v.get(i as usize)
            .cloned()
            .unwrap_or_else(|| format!("#{i}"))
    };
    if r.rule != NONE {
        s += &format!(" rule={}", name(&names.rules, r.rule));
    }
    if r.service != NONE {
        s += &format!(" service={}", name(&names.services, r.service));
    }
    s
}

/// Captures from the node whose pins are in `pin_dir` into `out` (pcapng) until the request is
/// met or `stop` is set; `progress` hears the count once a second. Returns the packets written.
pub fn capture(
    pin_dir: &Path,
    names: &Names,
    req: &CaptureRequest,
    out: &Path,
    stop: &AtomicBool,
    progress: &dyn Fn(u64),
) -> anyhow::Result<u64> {
    let open = |name: &str| -> anyhow::Result<MapData> {
        let path = pin_dir.join(name);
        if !path.exists() {
            bail!(
                "{} not found: no POP data plane with capture support is pinned there (start or upgrade the node's daemon with this anypop)",
                path.display()
            );
        }
        MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))
    };
    let service = match &req.service {
        None => NONE,
        Some(s) => names.services.iter().position(|n| n == s).ok_or_else(|| {
            if names.services.is_empty() {
                anyhow!("--service needs --config (the network file names the services)")
            } else {
                anyhow!(
                    "no service {s:?} on this node; services: {}",
                    names.services.join(", ")
                )
            }
        })? as u32,
    };
    let reasons = if req.reasons.is_empty() {
        Reason::ALL.iter().fold(0u64, |m, r| m | 1 << (*r as u32))
    } else {
        req.reasons.iter().fold(0u64, |m, r| m | 1 << (*r as u32))
    };
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| anyhow!("counting CPUs: {e}"))? as u32;
    let mut ring: RingBuf<MapData> = RingBuf::try_from(Map::RingBuf(open("CAPTURE_RING")?))
        .map_err(|e| anyhow!("CAPTURE_RING: {e}"))?;
    let mut config: Array<MapData, CaptureConfig> =
        Array::try_from(Map::Array(open("CAPTURE")?)).map_err(|e| anyhow!("CAPTURE: {e}"))?;
    if config.get(&0, 0).map(|c| c.reasons != 0).unwrap_or(false) {
        bail!(
            "another capture is running on this node; wait for it to end (one capture at a time)"
        );
    }
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = PcapNgWriter::new(std::io::BufWriter::new(file))
        .map_err(|e| anyhow!("writing {}: {e}", out.display()))?;
    writer
        .write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: anypop_common::layout::CAPTURE_SNAPLEN,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Borrowed("anypop edge")),
                // Timestamps in nanoseconds (what the writer stores).
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        })
        .map_err(|e| anyhow!("writing {}: {e}", out.display()))?;
    // Drain what an earlier capture may have left in the ring.
    while ring.next().is_some() {}
    config
        .set(
            0,
            CaptureConfig {
                reasons,
                service,
                per_cpu_pps: req.rate.div_ceil(cpus).max(1),
            },
            0,
        )
        .map_err(|e| anyhow!("CAPTURE: {e}"))?;
    let off = Off(config);
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut written = 0u64;
    while written < req.count
        && !stop.load(Ordering::Relaxed)
        && req.duration.is_none_or(|d| start.elapsed() < d)
    {
        let Some(item) = ring.next() else {
            std::thread::sleep(Duration::from_millis(5));
            if last_report.elapsed() >= Duration::from_secs(1) {
                progress(written);
                last_report = Instant::now();
            }
            continue;
        };
        if item.len() < std::mem::size_of::<CaptureRecord>() {
            continue;
        }
        // SAFETY: the program wrote a whole CaptureRecord (repr(C), plain integers and bytes).
        let rec: CaptureRecord =
            unsafe { std::ptr::read_unaligned(item.as_ptr() as *const CaptureRecord) };
        drop(item);
        let caplen = (rec.caplen as usize).min(rec.data.len());
        writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
                original_len: rec.len,
                data: Cow::Borrowed(&rec.data[..caplen]),
                options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment(
                    &rec, names,
                )))],
            })
            .map_err(|e| anyhow!("writing {}: {e}", out.display()))?;
        written += 1;
    }
    drop(off);
    use std::io::Write;
    writer
        .into_inner()
        .flush()
        .map_err(|e| anyhow!("writing {}: {e}", out.display()))?;
    Ok(written)
}
