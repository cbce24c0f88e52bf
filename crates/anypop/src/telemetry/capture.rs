//! `anypop capture`: packets sampled by the running edge program, each written to a pcapng file
//! with its verdict, reason, rule and service in the packet comment (Wireshark and
//! `tshark -r FILE -T fields -e frame.comment` show it).
//!
//! The program samples after its verdict, only the reasons (and service) asked for, at most a
//! given number per second per CPU, into a ring buffer (see `anypop-ebpf/src/capture.rs`). The
//! request lives in the pinned `CAPTURE` map; it is cleared again however the capture ends, and
//! one that is never cleared (the capture was killed with SIGKILL) expires by itself: the
//! request carries a deadline a few seconds ahead, which the running capture keeps pushing
//! forward and the kernel checks before each sample.
//!
//! The output file is the operator's and holds players' packets: it is created anew, mode 0600,
//! never through a symbolic link, and an existing file is replaced (atomically, never written
//! into) only when asked.
use std::{
    borrow::Cow,
    fs::File,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
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

use super::{
    monotonic_secs, open_pin, pin_dir_present, printable,
    trace::{Names, action_name},
};

/// How far ahead a running capture keeps its request's deadline: a capture that dies without
/// clearing it (SIGKILL) leaves the kernel sampling for at most this long.
pub const LEASE_SECS: u32 = 5;
/// How often a running capture pushes its deadline forward.
const RENEW_EVERY: Duration = Duration::from_secs(1);

// The reason bitmap is 32 bits wide (see `CaptureConfig`).
const _: () = {
    let mut i = 0;
    while i < Reason::ALL.len() {
        assert!((Reason::ALL[i] as u32) < 32);
        i += 1;
    }
};

/// The reason bitmap of `reasons` (empty: every reason).
pub fn reason_bits(reasons: &[Reason]) -> u32 {
    let all: &[Reason] = if reasons.is_empty() {
        &Reason::ALL
    } else {
        reasons
    };
    all.iter().fold(0u32, |m, r| m | 1 << (*r as u32))
}

/// Whether a request in the `CAPTURE` map is in force at monotonic second `now`: asked for
/// something, and either before its deadline or without one (set by an older anypop).
pub fn in_force(c: &CaptureConfig, now: u32) -> bool {
    c.reasons != 0 && (c.expires == 0 || now < c.expires)
}

/// How `status` shows a node's capture request at monotonic second `now`.
pub fn describe(c: &CaptureConfig, now: u32, names: &Names) -> String {
    if c.reasons == 0 {
        return "off".into();
    }
    let reasons = if c.reasons == reason_bits(&[]) {
        "every reason".to_string()
    } else {
        Reason::ALL
            .iter()
            .filter(|r| c.reasons >> (**r as u32) & 1 != 0)
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let service = if c.service == NONE {
        "any service".to_string()
    } else {
        format!(
            "service {}",
            names
                .services
                .get(c.service as usize)
                .map_or_else(|| format!("#{}", c.service), |n| printable(n).into_owned())
        )
    };
    let what = format!("{reasons}; {service}; at most {}/s per CPU", c.per_cpu_pps);
    if c.expires == 0 {
        format!("on ({what}; no deadline: started by an anypop without capture deadlines)")
    } else if now < c.expires {
        format!(
            "on ({what}; deadline in {} s, pushed ahead while its capture runs)",
            c.expires - now
        )
    } else {
        format!(
            "stale ({what}): its capture stopped renewing it {} s ago (killed?); the kernel samples nothing; the next capture replaces it",
            now - c.expires
        )
    }
}

/// Creates the capture file `out` for writing, mode 0600 (it holds players' packets), never
/// following a symbolic link (another user may have planted one where root writes).
///
/// A new path is created with O_CREAT | O_EXCL | O_NOFOLLOW. An existing path is refused unless
/// `overwrite`; then only a regular file of this user is replaced, by a fresh file created
/// beside it and renamed over it: the old file (perhaps a hard link to something else) is never
/// opened or written. A symbolic link, a device, a FIFO or a directory is never replaced.
pub fn create_output(out: &Path, overwrite: bool) -> anyhow::Result<File> {
    let create = |p: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(p)
    };
    match create(out) {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => bail!("creating {}: {e}", out.display()),
    }
    let meta = std::fs::symlink_metadata(out).with_context(|| format!("{}", out.display()))?;
    if meta.file_type().is_symlink() {
        bail!(
            "{} is a symbolic link: capture never writes through a link (someone else may have planted it); remove it or write elsewhere",
            out.display()
        );
    }
    if !meta.is_file() {
        bail!(
            "{} exists and is not a regular file: capture writes a new pcapng file",
            out.display()
        );
    }
    if !overwrite {
        bail!(
            "{} exists: pick a new file name, or --force to replace it",
            out.display()
        );
    }
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "{} belongs to uid {}, not to us (uid {me}): it is not replaced; remove it yourself if it should go",
            out.display(),
            meta.uid()
        );
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", out.display()))?
        .to_string_lossy();
    for attempt in 0..100u32 {
        let tmp = dir.join(format!(".{name}.anypop-{}-{attempt}", std::process::id()));
        match create(&tmp) {
            Ok(f) => {
                if let Err(e) = std::fs::rename(&tmp, out) {
                    let _ = std::fs::remove_file(&tmp);
                    bail!("replacing {}: {e}", out.display());
                }
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => bail!("creating {}: {e}", tmp.display()),
        }
    }
    bail!(
        "replacing {}: no free temporary name beside it",
        out.display()
    )
}

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
            .map(|n| printable(n).into_owned())
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
/// An existing `out` is refused (see [`capture_to`]).
pub fn capture(
    pin_dir: &Path,
    names: &Names,
    req: &CaptureRequest,
    out: &Path,
    stop: &AtomicBool,
    progress: &dyn Fn(u64),
) -> anyhow::Result<u64> {
    capture_to(pin_dir, names, req, out, false, stop, progress)
}

/// [`capture`], replacing an existing regular file `out` of this user when `overwrite`
/// (`--force`; see [`create_output`]).
pub fn capture_to(
    pin_dir: &Path,
    names: &Names,
    req: &CaptureRequest,
    out: &Path,
    overwrite: bool,
    stop: &AtomicBool,
    progress: &dyn Fn(u64),
) -> anyhow::Result<u64> {
    let present = pin_dir_present(pin_dir)?;
    let open = |name: &str| -> anyhow::Result<MapData> {
        let path = pin_dir.join(name);
        if !present || !path.exists() {
            bail!(
                "{} not found: no POP data plane with capture support is pinned there (start or upgrade the node's daemon with this anypop)",
                path.display()
            );
        }
        open_pin(&path)
    };
    let service = match &req.service {
        None => NONE,
        Some(s) => names.services.iter().position(|n| n == s).ok_or_else(|| {
            if names.services.is_empty() {
                anyhow!("--service needs --config (the network file names the services)")
            } else {
                anyhow!(
                    "no service {s:?} on this node; services: {}",
                    names
                        .services
                        .iter()
                        .map(|n| printable(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        })? as u32,
    };
    let reasons = reason_bits(&req.reasons);
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| anyhow!("counting CPUs: {e}"))? as u32;
    let mut ring: RingBuf<MapData> =
        RingBuf::try_from(Map::RingBuf(open("CAPTURE_RING")?)).context("CAPTURE_RING")?;
    let mut config: Array<MapData, CaptureConfig> =
        Array::try_from(Map::Array(open("CAPTURE")?)).context("CAPTURE")?;
    // A request past its deadline is a dead capture's: replaced.
    if config
        .get(&0, 0)
        .is_ok_and(|c| in_force(&c, monotonic_secs()))
    {
        bail!(
            "another capture is running on this node; wait for it to end (one capture at a time)"
        );
    }
    let file = create_output(out, overwrite)?;
    let mut writer = PcapNgWriter::new(std::io::BufWriter::new(file))
        .with_context(|| format!("writing {}", out.display()))?;
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
        .with_context(|| format!("writing {}", out.display()))?;
    // Drain what an earlier capture may have left in the ring.
    while ring.next().is_some() {}
    let request = |expires: u32| CaptureConfig {
        reasons,
        expires,
        service,
        per_cpu_pps: req.rate.div_ceil(cpus).max(1),
    };
    config
        .set(0, request(monotonic_secs() + LEASE_SECS), 0)
        .context("CAPTURE")?;
    let mut off = Off(config);
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut last_renewal = Instant::now();
    let mut written = 0u64;
    while written < req.count
        && !stop.load(Ordering::Relaxed)
        && req.duration.is_none_or(|d| start.elapsed() < d)
    {
        if last_renewal.elapsed() >= RENEW_EVERY {
            off.0
                .set(0, request(monotonic_secs() + LEASE_SECS), 0)
                .context("CAPTURE")?;
            last_renewal = Instant::now();
        }
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
            .with_context(|| format!("writing {}", out.display()))?;
        written += 1;
    }
    drop(off);
    use std::io::Write;
    writer
        .into_inner()
        .flush()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            rules: vec!["block\nverdict=PASS reason=fwd_ipip".into()],
            services: vec!["game\u{1b}[31m".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_comment_escapes_the_names_it_quotes() {
        let rec = CaptureRecord {
            action: 1,
            reason: Reason::DropRule as u32,
            service: 0,
            rule: 0,
            generation: 0,
            len: 60,
            caplen: 0,
            _pad: 0,
            data: [0; anypop_common::layout::CAPTURE_SNAPLEN as usize],
        };
        assert_eq!(
            comment(&rec, &names()),
            "verdict=DROP reason=drop_rule rule=block\\nverdict=PASS reason=fwd_ipip service=game\\u{1b}[31m"
        );
    }

    #[test]
    fn a_request_is_in_force_until_its_deadline_and_status_says_which() {
        let c = CaptureConfig {
            reasons: reason_bits(&[Reason::DropRule, Reason::FwdIpip]),
            expires: 100,
            service: 0,
            per_cpu_pps: 500,
        };
        assert_eq!(c.reasons, 1 << 6 | 1 << 13);
        assert!(in_force(&c, 99));
        assert!(!in_force(&c, 100));
        assert!(in_force(&CaptureConfig { expires: 0, ..c }, u32::MAX));
        assert!(!in_force(&CaptureConfig::default(), 0));
        let n = names();
        assert_eq!(describe(&CaptureConfig::default(), 5, &n), "off");
        assert_eq!(
            describe(&c, 97, &n),
            "on (drop_rule, fwd_ipip; service game\\u{1b}[31m; at most 500/s per CPU; deadline in 3 s, pushed ahead while its capture runs)"
        );
        assert!(describe(&c, 112, &n).starts_with("stale (drop_rule, fwd_ipip;"));
        assert!(describe(&c, 112, &n).contains("12 s ago"));
        let all = CaptureConfig {
            reasons: reason_bits(&[]),
            expires: 0,
            service: NONE,
            ..c
        };
        assert!(
            describe(&all, 1, &n).starts_with("on (every reason; any service;"),
            "{}",
            describe(&all, 1, &n)
        );
    }
}
