//! `anypop trace`: "why was this player dropped?" — each packet of a capture is run through the
//! node's *running* `edge` program (the very program attached to its interface, with its live
//! maps) by BPF_PROG_TEST_RUN, and the verdict is printed with the rule, service and backend that
//! decided it and a summary of the packet the program would send.
//!
//! The program reports its decisions only through its per-CPU counters, so trace pins itself to
//! one CPU and reads that CPU's counters before and after each run: the reason, rule, service and
//! backend counters that moved are the decision. Live traffic on that CPU in between could blur
//! it; trace re-runs a packet whose counters moved ambiguously.
//!
//! Effects on state, documented for operators: a traced packet counts in the node's counters
//! like a real one, consumes rate-limit tokens of its source (and can start a block), and a
//! forwarded one creates or refreshes its flow entry. Nothing leaves the machine.
//!
//! A capture is the operator's input, not always a clean one: a frame the kernel cannot run (too
//! short for an Ethernet header, too long for a test run) is reported on its own line and the
//! rest is traced; a file cut short (a capture still being written, a partial copy) is traced up
//! to its last whole record, with a warning.
use std::{
    borrow::Cow,
    io::{Read, Seek},
    net::Ipv4Addr,
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use anyhow::{Context, anyhow, bail};
use anypop_common::{layout::Counter, verdict::Reason};
use aya::{
    maps::{Map, MapData, PerCpuArray},
    programs::Xdp,
};
use aya_obj::programs::xdp::XdpAttachType;

use super::{open_pin, pin_dir_present, printable};
use crate::dataplane::testrun::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, run_xdp};

/// The shortest frame BPF_PROG_TEST_RUN runs through an XDP program: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// The largest capture file `trace` reads.
pub const MAX_PCAP_BYTES: u64 = 1 << 30;

/// Names behind the counter indices of the live generation (from the network file).
pub use crate::compile::Names;

/// What the program did with one packet.
#[derive(Clone, Debug)]
pub struct Traced {
    /// The XDP action; None when the frame was not run (`not_run` says why).
    pub action: Option<u32>,
    /// Why the frame was not run (too short, too long for a test run).
    pub not_run: Option<String>,
    pub reason: Option<Reason>,
    pub rule: Option<String>,
    pub service: Option<String>,
    pub backend: Option<String>,
    pub input: String,
    pub output: Option<String>,
}

/// The running program of a node and the counters it writes.
pub struct Tracer {
    prog: Xdp,
    ifindex: u32,
    cpu: usize,
    counters: PerCpuArray<MapData, Counter>,
    rules: PerCpuArray<MapData, Counter>,
    services: PerCpuArray<MapData, Counter>,
    backends: PerCpuArray<MapData, Counter>,
    names: Names,
}

fn open_counters(pin_dir: &Path, name: &str) -> anyhow::Result<PerCpuArray<MapData, Counter>> {
    let data = open_pin(&pin_dir.join(name))?;
    PerCpuArray::try_from(Map::PerCpuArray(data)).with_context(|| name.to_string())
}

/// One CPU's value of every index in `range` of a per-CPU counter array.
fn on_cpu(
    map: &PerCpuArray<MapData, Counter>,
    cpu: usize,
    range: std::ops::Range<u32>,
) -> anyhow::Result<Vec<u64>> {
    range
        .map(|i| {
            map.get(&i, 0)
                .map(|v| v.get(cpu).map_or(0, |c| c.packets))
                .context("reading counters")
        })
        .collect()
}

/// Indices whose value grew.
fn moved(before: &[u64], after: &[u64]) -> Vec<usize> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (a, b))| b > a)
        .map(|(i, _)| i)
        .collect()
}

impl Tracer {
    /// Finds the program attached to `ifname` (in this thread's network namespace) and the
    /// node's pinned counters in `pin_dir`. Pins the calling thread to the CPU it runs on.
    pub fn new(pin_dir: &Path, ifname: &str, names: Names) -> anyhow::Result<Tracer> {
        if !pin_dir_present(pin_dir)? || !pin_dir.join("COUNTERS").exists() {
            bail!(
                "no POP data plane is pinned in {} (is the node's daemon running, or was its data plane left running? trace works on POPs)",
                pin_dir.display()
            );
        }
        let ifindex = crate::sys::iface::ifindex(ifname, "trace")?;
        let shown = printable(ifname);
        let id = crate::dataplane::links::seen_xdp(ifname)
            .and_then(|x| x.prog_id)
            .ok_or_else(|| {
                anyhow!(
                    "no XDP program is attached to {shown}; start the node with anypop run first"
                )
            })?;
        let info = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == id)
            .ok_or_else(|| anyhow!("program {id} on {shown} vanished"))?;
        let name = info.name_as_str().unwrap_or("").to_owned();
        if name != "edge" {
            bail!(
                "{shown} runs XDP program {name:?} (id {id}), not anypop's edge: nothing to trace"
            );
        }
        let prog = Xdp::from_program_info(info, Cow::Borrowed("edge"), XdpAttachType::Interface)
            .with_context(|| format!("opening program {id}"))?;
        let cpu = pin_to_current_cpu()?;
        Ok(Tracer {
            prog,
            ifindex,
            cpu,
            counters: open_counters(pin_dir, "COUNTERS")?,
            rules: open_counters(pin_dir, "RULE_HITS")?,
            services: open_counters(pin_dir, "SVC_HITS")?,
            backends: open_counters(pin_dir, "BE_HITS")?,
            names,
        })
    }

    /// All counters of this CPU: verdicts, then rules, services, backends (both generations).
    fn read(&self) -> anyhow::Result<[Vec<u64>; 4]> {
        Ok([
            on_cpu(&self.counters, self.cpu, 0..self.counters.len())?,
            on_cpu(&self.rules, self.cpu, 0..self.rules.len())?,
            on_cpu(&self.services, self.cpu, 0..self.services.len())?,
            on_cpu(&self.backends, self.cpu, 0..self.backends.len())?,
        ])
    }

    /// Runs one frame through the program and tells what it decided. A frame the kernel does
    /// not run (shorter than an Ethernet header, longer than a test run takes) comes back with
    /// `not_run` set; errors are the node's, not the frame's.
    pub fn trace(&self, frame: &[u8]) -> anyhow::Result<Traced> {
        let not_run = |why: String| Traced {
            action: None,
            not_run: Some(why),
            reason: None,
            rule: None,
            service: None,
            backend: None,
            input: summary(frame),
            output: None,
        };
        if frame.len() < MIN_FRAME {
            return Ok(not_run(format!(
                "not run: {} bytes, shorter than an Ethernet header ({MIN_FRAME} bytes)",
                frame.len()
            )));
        }
        // A live packet on this CPU between the readings would show as a second verdict: retry.
        for _ in 0..5 {
            let before = self.read()?;
            let run = match run_xdp(&self.prog, frame, Some(self.ifindex), 1) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(not_run(format!(
                        "not run: the kernel refused a test run of this {}-byte frame ({e})",
                        frame.len()
                    )));
                }
            };
            let after = self.read()?;
            let reasons = moved(&before[0], &after[0]);
            if reasons.len() > 1 {
                continue;
            }
            let pick = |k: usize, names: &[String], slot: u32| -> Option<String> {
                let m = moved(&before[k], &after[k]);
                m.first().map(|&i| {
                    let idx = i as u32 % slot;
                    names
                        .get(idx as usize)
                        .map(|n| printable(n).into_owned())
                        .unwrap_or_else(|| format!("#{idx}"))
                })
            };
            let half = |m: &PerCpuArray<MapData, Counter>| (m.len() / 2).max(1);
            let output = matches!(run.action, XDP_TX | XDP_REDIRECT | XDP_PASS)
                .then(|| summary(&run.output))
                .filter(|o| *o != summary(frame));
            return Ok(Traced {
                action: Some(run.action),
                not_run: None,
                reason: reasons.first().and_then(|&r| Reason::from_u32(r as u32)),
                rule: pick(1, &self.names.rules, half(&self.rules)),
                service: pick(2, &self.names.services, half(&self.services)),
                backend: pick(3, &self.names.backends, half(&self.backends)),
                input: summary(frame),
                output,
            });
        }
        bail!("the node's traffic kept moving this CPU's counters; trace again when it is quieter")
    }
}

/// Pins the calling thread to the CPU it is on (BPF_PROG_TEST_RUN runs the program there, and
/// the per-CPU counters we read must be that CPU's).
fn pin_to_current_cpu() -> anyhow::Result<usize> {
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        bail!("sched_getcpu: {}", std::io::Error::last_os_error());
    }
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(cpu as usize)
}

/// The XDP action's name.
pub fn action_name(a: u32) -> &'static str {
    match a {
        XDP_ABORTED => "ABORTED",
        XDP_DROP => "DROP",
        XDP_PASS => "PASS",
        XDP_TX => "TX",
        XDP_REDIRECT => "REDIRECT",
        _ => "?",
    }
}

/// One line about a frame: addresses, ports, protocol, length; IPIP shows outer and inner.
pub fn summary(frame: &[u8]) -> String {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return format!("{} B (not parseable)", frame.len());
    };
    let l4 = |t: &Option<TransportSlice>| -> (String, String, &'static str) {
        match t {
            Some(TransportSlice::Udp(u)) => (
                format!(":{}", u.source_port()),
                format!(":{}", u.destination_port()),
                "udp",
            ),
            Some(TransportSlice::Tcp(t)) => (
                format!(":{}", t.source_port()),
                format!(":{}", t.destination_port()),
                if t.syn() { "tcp SYN" } else { "tcp" },
            ),
            Some(TransportSlice::Icmpv4(_)) => (String::new(), String::new(), "icmp"),
            Some(TransportSlice::Icmpv6(_)) => (String::new(), String::new(), "icmpv6"),
            None => (String::new(), String::new(), "?"),
        }
    };
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let (src, dst) = (Ipv4Addr::from(h.source()), Ipv4Addr::from(h.destination()));
            if h.protocol() == etherparse::IpNumber::IPV4 {
                let inner = summary_ip(ip.payload().payload);
                return format!("ipip {src} → {dst} [{inner}] {} B", frame.len());
            }
            if let Some(TransportSlice::Icmpv4(icmp)) = &p.transport
                && let etherparse::Icmpv4Type::DestinationUnreachable(
                    etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
                ) = icmp.icmp_type()
            {
                return format!(
                    "{src} → {dst} icmp fragmentation needed (mtu {next_hop_mtu}) {} B",
                    frame.len()
                );
            }
            let (sp, dp, proto) = l4(&p.transport);
            format!("{src}{sp} → {dst}{dp} {proto} {} B", frame.len())
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let (sp, dp, proto) = l4(&p.transport);
            format!(
                "[{}]{sp} → [{}]{dp} {proto} {} B",
                std::net::Ipv6Addr::from(h.source()),
                std::net::Ipv6Addr::from(h.destination()),
                frame.len()
            )
        }
        _ => format!("non-IP {} B", frame.len()),
    }
}

/// `summary` of a bare IPv4 packet (the inside of IPIP).
fn summary_ip(ip: &[u8]) -> String {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    let s = summary(&f);
    // Drop the length, which counted our made-up Ethernet header.
    s.rsplit_once(' ')
        .and_then(|(a, _)| a.rsplit_once(' ').map(|(b, _)| b.to_owned()))
        .unwrap_or(s)
}

/// The frames of a capture file, and what could not be read of it.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    /// Every whole frame, in order.
    pub frames: Vec<Vec<u8>>,
    /// Set when the file ends inside a record or a record is damaged: reading stopped there
    /// and `frames` holds the packets before it. Print it after tracing them.
    pub warning: Option<String>,
}

/// Every frame of a pcap or pcapng file (Ethernet link type), as [`read_capture`]; a warning
/// (a truncated last record) goes to the log.
pub fn read_frames(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let c = read_capture(path)?;
    if let Some(w) = &c.warning {
        tracing::warn!("{w}");
    }
    Ok(c.frames)
}

/// Opens a capture file to read: a regular file of at most [`MAX_PCAP_BYTES`] (opened without
/// blocking, so a FIFO or a device named by mistake is refused instead of waited on).
fn open_capture(path: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                anyhow!(
                    "{}: permission denied: make the file readable by this user (trace runs as root; a file on a network share may still refuse it)",
                    path.display()
                )
            } else {
                anyhow!("reading {}: {e}", path.display())
            }
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file (a directory, FIFO or device): trace reads a pcap or pcapng file",
            path.display()
        );
    }
    if meta.len() > MAX_PCAP_BYTES {
        bail!(
            "{} is {} MiB; trace reads at most {} MiB: take the packets in question out first (editcap -r FILE OUT 1-1000, or tcpdump -r FILE -w OUT -c 1000 'filter')",
            path.display(),
            meta.len() >> 20,
            MAX_PCAP_BYTES >> 20
        );
    }
    // Back to blocking reads for a regular file (O_NONBLOCK means nothing there, but be plain).
    // SAFETY: fcntl on our own open descriptor.
    unsafe {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// What to say when reading `path` stops after `n` packets on error `e`.
fn stopped_after(path: &Path, n: usize, e: &pcap_file::PcapError) -> String {
    let cut = matches!(e, pcap_file::PcapError::IncompleteBuffer)
        || matches!(e, pcap_file::PcapError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof);
    if cut {
        format!(
            "{}: the file ends inside the record after packet {n} (a capture still being written, or a partial copy): that record is skipped; the {n} packets before it were read",
            path.display()
        )
    } else {
        format!(
            "{}: the record after packet {n} is damaged ({e}); reading stopped there: the {n} packets before it were read",
            path.display()
        )
    }
}

/// Every frame of a pcap or pcapng file (Ethernet link type) of at most [`MAX_PCAP_BYTES`].
/// A file cut short, or damaged after some packets, gives the packets before the bad record and
/// a warning; a file that is no capture at all, or whose link type is not Ethernet, is an error.
pub fn read_capture(path: &Path) -> anyhow::Result<Capture> {
    let mut file = open_capture(path)?;
    let mut magic = [0u8; 4];
    let got = file
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    file.rewind()
        .with_context(|| format!("reading {}", path.display()))?;
    let data = file.take(MAX_PCAP_BYTES);
    let mut cap = Capture::default();
    if got == 4 && magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = pcap_file::pcapng::PcapNgReader::new(data)
            .with_context(|| format!("{}: not a valid pcapng file", path.display()))?;
        let link = |r: &pcap_file::pcapng::PcapNgReader<_>, id: u32| {
            r.interfaces().get(id as usize).map(|i| i.linktype)
        };
        let mut n = 0usize;
        while let Some(block) = r.next_block() {
            use pcap_file::pcapng::Block;
            let (data, id) = match block {
                Ok(Block::EnhancedPacket(p)) => (p.data.into_owned(), p.interface_id),
                Ok(Block::SimplePacket(p)) => (p.data.into_owned(), 0),
                Ok(Block::Packet(p)) => (p.data.into_owned(), p.interface_id as u32),
                Ok(_) => continue,
                Err(e) => {
                    cap.warning = Some(stopped_after(path, n, &e));
                    break;
                }
            };
            n += 1;
            match link(&r, id) {
                Some(pcap_file::DataLink::ETHERNET) => cap.frames.push(data),
                other => bail!(
                    "{}: packet {n} is from an interface of link type {}; trace needs Ethernet frames (capture on the interface, not on `any`)",
                    path.display(),
                    other.map_or("(undeclared)".to_string(), |l| format!("{l:?}"))
                ),
            }
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(data).map_err(|e| {
            anyhow!(
                "{}: neither pcap nor pcapng ({e}); write captures with tcpdump -w or anypop capture",
                path.display()
            )
        })?;
        if r.header().datalink != pcap_file::DataLink::ETHERNET {
            bail!(
                "{}: link type {:?}; trace needs Ethernet frames (capture on the interface, not on `any`)",
                path.display(),
                r.header().datalink
            );
        }
        while let Some(p) = r.next_packet() {
            match p {
                Ok(p) => cap.frames.push(p.data.into_owned()),
                Err(e) => {
                    cap.warning = Some(stopped_after(path, cap.frames.len(), &e));
                    break;
                }
            }
        }
    }
    Ok(cap)
}

/// The line `anypop trace` prints for packet `n`.
pub fn line(n: usize, t: &Traced) -> String {
    let Some(action) = t.action else {
        return format!(
            "#{n:<4} {:<48} {}",
            t.input,
            t.not_run.as_deref().unwrap_or("not run")
        );
    };
    let mut s = format!(
        "#{n:<4} {:<48} {:<8} {}",
        t.input,
        action_name(action),
        t.reason.map_or("?", |r| r.name())
    );
    for (what, v) in [
        ("service", &t.service),
        ("rule", &t.rule),
        ("backend", &t.backend),
    ] {
        if let Some(v) = v {
            s += &format!(" {what}={v}");
        }
    }
    if let Some(o) = &t.output {
        s += &format!("\n       → {o}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn an_icmp_fragmentation_needed_answer_names_the_mtu() {
        use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([203, 0, 113, 10], [100, 64, 1, 2], 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1480 },
            ));
        let mut f = Vec::new();
        b.write(&mut f, &[0u8; 28]).unwrap();
        assert_eq!(
            summary(&f),
            "203.0.113.10 → 100.64.1.2 icmp fragmentation needed (mtu 1480) 70 B"
        );
    }
}
