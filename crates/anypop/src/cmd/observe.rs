//! Looking at traffic: `capture` samples packets with their verdicts, `trace` replays a capture
//! through the running program.
use std::{path::PathBuf, time::Duration};

use anypop::{dataplane, telemetry};
use anypop_common::verdict::Reason;

use super::{pop_names, require_root, stop_on_signals};

/// [`pop_names`] for trace and capture, which work on a POP's edge program only.
fn edge_names(
    cfg: &std::path::Path,
    node: &str,
) -> anyhow::Result<(anypop::compile::Names, Option<String>)> {
    pop_names(cfg, node)?.ok_or_else(|| {
        anyhow::anyhow!("node {node} is a backend; trace and capture work on a POP's edge program")
    })
}

#[derive(clap::Args)]
pub struct CaptureArgs {
    #[arg(long)]
    pub node: String,
    /// The pcapng file to write.
    #[arg(short = 'w', long = "write")]
    pub out: PathBuf,
    /// Only these verdict reasons (repeat the flag; default: every reason).
    #[arg(long = "reason")]
    pub reasons: Vec<String>,
    /// Only this service (needs --config).
    #[arg(long)]
    pub service: Option<String>,
    /// Stop after this many packets.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Samples per second at most (over all CPUs): a flood cannot overload the capture.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// The network file, to name rules and services.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value_os_t = dataplane::pin_root())]
    pub pin_root: PathBuf,
    /// Replace FILE if it exists (only a regular file of this user, by a new file renamed
    /// over it; a symbolic link is never followed or replaced).
    #[arg(long)]
    pub force: bool,
}

/// The verdict reason called `name`, or an error listing them all.
fn reason_named(name: &str) -> anyhow::Result<Reason> {
    Reason::ALL
        .iter()
        .copied()
        .find(|x| x.name() == name)
        .ok_or_else(|| {
            let all: Vec<&str> = Reason::ALL.iter().map(|x| x.name()).collect();
            anyhow::anyhow!(
                "--reason {name:?} is not a verdict reason; one of: {}",
                all.join(", ")
            )
        })
}

pub fn cmd_capture(a: CaptureArgs) -> anyhow::Result<()> {
    require_root("capture reads the node's pinned maps")?;
    let reasons = a
        .reasons
        .iter()
        .map(|r| reason_named(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names = match &a.config {
        Some(cfg) => edge_names(cfg, &a.node)?.0,
        None => Default::default(),
    };
    let stop = stop_on_signals()?;
    let n = telemetry::capture::capture_to(
        &dataplane::node_pin_dir(&a.pin_root, &a.node),
        &names,
        &telemetry::capture::CaptureRequest {
            reasons,
            service: a.service,
            count: a.count,
            duration: a.duration.map(Duration::from_secs),
            rate: a.rate,
        },
        &a.out,
        a.force,
        &stop,
        &|n| eprintln!("captured {n} packets so far …"),
    )?;
    println!("{n} packets written to {}", a.out.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct TraceArgs {
    /// A pcap or pcapng file of Ethernet frames (tcpdump -w, anypop capture).
    #[arg(long)]
    pub pcap: PathBuf,
    #[arg(long)]
    pub node: String,
    /// The network file: names rules, services and backends, and gives the interface.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The interface whose program to trace (default: the node's first).
    #[arg(long)]
    pub interface: Option<String>,
    #[arg(long, default_value_os_t = dataplane::pin_root())]
    pub pin_root: PathBuf,
}

pub fn cmd_trace(a: TraceArgs) -> anyhow::Result<()> {
    require_root("trace runs the node's eBPF program")?;
    let (names, first_if) = match &a.config {
        Some(cfg) => edge_names(cfg, &a.node)?,
        None => (Default::default(), None),
    };
    let ifname = a.interface.or(first_if).ok_or_else(|| {
        anyhow::anyhow!(
            "which interface? give --config FILE (its node's first interface) or --interface IF"
        )
    })?;
    let capture = telemetry::trace::read_capture(&a.pcap)?;
    let tracer = telemetry::trace::Tracer::new(
        &dataplane::node_pin_dir(&a.pin_root, &a.node),
        &ifname,
        names,
    )?;
    println!(
        "tracing {} packets of {} through the edge program running on {ifname} (node {})",
        capture.frames.len(),
        a.pcap.display(),
        a.node
    );
    for (i, f) in capture.frames.iter().enumerate() {
        let t = tracer.trace(f)?;
        println!("{}", telemetry::trace::line(i + 1, &t));
    }
    if let Some(w) = &capture.warning {
        eprintln!("warning: {w}");
    }
    Ok(())
}
