//! A node's life: `check` its part of the file, `run` it, `apply` a change, see its `status`,
//! take it `down`.
use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use anypop::{daemon, dataplane, sys::privileges};

use super::{DEFAULT_CONFIG, compile_node, load_network, pop_names, require_default_config};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The network file (the same on every node).
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Also compile the kernel tables for this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Warnings (prefixes with host bits, a service whose every backend drains, …) are errors.
    #[arg(long)]
    pub strict: bool,
}

pub fn cmd_check(a: CheckArgs) -> anyhow::Result<()> {
    let mut net = load_network(&a.config)?;
    if a.strict {
        net = net.strict()?;
    }
    for w in net.warning_lines() {
        eprintln!("warning: {w}");
    }
    if let Some(node) = &a.node {
        compile_node(&net, node)?;
    }
    println!("{}: OK — {}", a.config.display(), daemon::describe(&net));
    Ok(())
}

/// The node a daemon command acts on: the network file, the node's name in it, and where its
/// pins live (`apply` finds the daemon's control socket by the last two).
#[derive(clap::Args)]
pub struct NodeArgs {
    /// The network file (the same on every node).
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// This machine's node name in the network file.
    #[arg(long)]
    pub node: String,
    /// Where pins live (one directory per node below it).
    #[arg(long, default_value_os_t = dataplane::pin_root())]
    pub pin_root: PathBuf,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub at: NodeArgs,
    /// Seconds between counter summaries.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// On exit, detach the programs. By default the attachments are pinned and the data
    /// plane keeps running without the daemon; the next `anypop run` (or a newer anypop)
    /// adopts it, replacing the programs in place without losing a packet.
    #[arg(long, conflicts_with = "leave_running")]
    pub detach: bool,
    /// Leave the data plane running on exit (the default; kept for scripts).
    #[arg(long, hide = true)]
    pub leave_running: bool,
    /// Stop after this many seconds (for scripts and tests); default: until SIGINT/SIGTERM.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Prometheus metrics listen address ("off" to disable).
    #[arg(long, default_value = "127.0.0.1:9542")]
    pub metrics: String,
    /// Do not apply the network file when it changes on disk (SIGHUP and `anypop apply`
    /// still do).
    #[arg(long)]
    pub no_watch: bool,
}

pub fn cmd_run(a: RunArgs) -> anyhow::Result<()> {
    let metrics = match a.metrics.as_str() {
        "off" => None,
        m => Some(m.parse::<std::net::SocketAddr>().map_err(|_| {
            anyhow::anyhow!(
                "--metrics {m:?} is not an address; write IP:PORT (e.g. 127.0.0.1:9542) or off"
            )
        })?),
    };
    // Said before the privilege check: a missing default file is the likelier mistake.
    require_default_config(&a.at.config)?;
    privileges::require(
        privileges::DAEMON,
        "anypop run loads eBPF programs and attaches XDP",
    )?;
    let stop = super::stop_on_signals()?;
    // SIGHUP: re-read the network file and apply it live.
    let reload = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, std::sync::Arc::clone(&reload))
        .context("installing signal handler")?;
    daemon::run::run(
        daemon::run::RunOptions {
            config: a.at.config,
            node: a.at.node,
            pin_root: a.at.pin_root,
            interval: Duration::from_secs(a.interval.max(1)),
            leave_running: !a.detach,
            duration: a.duration.map(Duration::from_secs),
            metrics,
            watch: !a.no_watch,
        },
        &stop,
        &reload,
    )
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub at: NodeArgs,
    /// Apply what can be applied live even when some changes (interfaces, table sizes,
    /// xdp_mode) take a restart of the daemon; without it such a file is refused whole.
    #[arg(long)]
    pub allow_restart_needed: bool,
}

/// Validates the file here first (a bad file never reaches the daemon), then hands it to the
/// node's daemon over its control socket and prints the answer.
pub fn cmd_apply(a: ApplyArgs) -> anyhow::Result<()> {
    let net = load_network(&a.at.config)?;
    compile_node(&net, &a.at.node)?;
    let abs =
        std::fs::canonicalize(&a.at.config).with_context(|| a.at.config.display().to_string())?;
    let answer = daemon::control::ask(
        &anypop::sys::rundir::socket_path(&dataplane::node_pin_dir(&a.at.pin_root, &a.at.node)),
        &a.at.node,
        &daemon::control::Request::Apply {
            config: abs,
            allow_restart_needed: a.allow_restart_needed,
        },
        Duration::from_secs(120),
    )?;
    if !answer.ok {
        bail!("{}", answer.message);
    }
    println!("{}", answer.message);
    Ok(())
}

#[derive(clap::Args)]
pub struct DownArgs {
    #[arg(long)]
    pub node: String,
    #[arg(long, default_value_os_t = dataplane::pin_root())]
    pub pin_root: PathBuf,
    /// Keep the state maps (flows, rate-limit buckets) for a later `anypop run`.
    #[arg(long)]
    pub keep_state: bool,
}

pub fn cmd_down(a: DownArgs) -> anyhow::Result<()> {
    privileges::require(
        privileges::DAEMON,
        "anypop down detaches programs and removes pins",
    )?;
    let removed = daemon::down::down(&a.pin_root, &a.node, a.keep_state)?;
    println!("{}", removed.describe(&a.node));
    Ok(())
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub node: String,
    #[arg(long, default_value_os_t = dataplane::pin_root())]
    pub pin_root: PathBuf,
    /// Seconds over which rates and the programs' cost are measured.
    #[arg(long, default_value_t = 1)]
    pub window: u64,
    /// The network file, to name rules and services (optional).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn cmd_status(a: StatusArgs) -> anyhow::Result<()> {
    let dir = dataplane::node_pin_dir(&a.pin_root, &a.node);
    let names = match &a.config {
        Some(cfg) => pop_names(cfg, &a.node)?.map(|(n, _)| n).unwrap_or_default(),
        None => Default::default(),
    };
    print!(
        "{}",
        anypop::telemetry::status::report_named(
            &dir,
            &a.node,
            Duration::from_secs(a.window.max(1)),
            &names
        )?
    );
    Ok(())
}
