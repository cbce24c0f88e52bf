//! The `anypop` command: one binary for every node and every operator task.
use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use anypop::{config, daemon};

#[derive(Parser)]
#[command(
    name = "anypop",
    version,
    about = "Anycast game-server protection and forwarding with XDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the whole network file (every service, rule, profile and node).
    Check {
        /// The network file.
        #[arg(long, short)]
        config: PathBuf,
        /// Also compile the kernel tables for this node.
        #[arg(long)]
        node: Option<String>,
    },
    /// Run this machine's part of the network: load, attach, fill maps, report counters.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// This machine's node name in the network file.
        #[arg(long)]
        node: String,
        /// Where pins live (one directory per node below it).
        #[arg(long, default_value_os_t = anypop::dataplane::pin_root())]
        pin_root: PathBuf,
        /// Seconds between counter summaries.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// On exit, pin the attachments and leave the data plane running (default: detach).
        #[arg(long)]
        leave_running: bool,
        /// Stop after this many seconds (for scripts and tests); default: until SIGINT/SIGTERM.
        #[arg(long)]
        duration: Option<u64>,
        /// Prometheus metrics listen address ("off" to disable).
        #[arg(long, default_value = "127.0.0.1:9542")]
        metrics: String,
    },
    /// Benchmark ns/packet of the programs beside an empty program, XDP_DROP and xdp-filter.
    Bench {
        /// Single-run samples per path.
        #[arg(long, default_value_t = 20_000)]
        iterations: u32,
        /// Repetitions per sample for the `repeat` method.
        #[arg(long, default_value_t = 200_000)]
        repeat: u32,
        /// Blocklist sizes to measure (flatness from 1 to 100,000 prefixes).
        #[arg(long, value_delimiter = ',', default_value = "1,1000,100000")]
        prefixes: Vec<usize>,
        /// Instead: Mpps through a veth pair (flood drop and forward) beside bare XDP_DROP /
        /// XDP_TX, xdp-filter and nftables (docs/BENCHMARKS.md, "Throughput").
        #[arg(long)]
        throughput: bool,
        /// With --throughput: frames per measurement.
        #[arg(long, default_value_t = 2_000_000)]
        frames: u32,
        /// With --throughput: rounds (every program once per round, interleaved).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// What a node's data plane is doing: daemon, config version, verdicts with rates, state.
    Status {
        #[arg(long)]
        node: String,
        #[arg(long, default_value_os_t = anypop::dataplane::pin_root())]
        pin_root: PathBuf,
        /// Seconds over which rates are measured.
        #[arg(long, default_value_t = 1)]
        window: u64,
    },
    /// Apply a changed network file to the running daemon of a node, live (validated here first;
    /// a file with any problem never replaces the running config).
    Apply {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        node: String,
        #[arg(long, default_value_os_t = anypop::dataplane::pin_root())]
        pin_root: PathBuf,
    },
    /// The lab: anycast networks in network namespaces.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// A POP in namespaces forwards a player to its backend while a flood hits the VIP.
    Demo {
        /// Seconds to run.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Player packets per second.
        #[arg(long, default_value_t = 64)]
        tick_rate: u32,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { config, node } => {
            let net = config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(node) = node {
                let role = net.node(&node).map_err(|e| anyhow::anyhow!("{e}"))?.role;
                let compiled = match role {
                    config::Role::Pop => config::compile::compile_edge(
                        &net,
                        &node,
                        0,
                        anypop_common::layout::MAX_SERVICES,
                    )
                    .map(|_| ()),
                    config::Role::Backend => {
                        config::compile::compile_backend(&net, &node).map(|_| ())
                    }
                };
                compiled.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            println!("{}: OK — {}", config.display(), daemon::describe(&net));
            Ok(())
        }
        Command::Run {
            config,
            node,
            pin_root,
            interval,
            leave_running,
            duration,
            metrics,
        } => {
            let latest = Arc::new(std::sync::Mutex::new(String::new()));
            if metrics != "off" {
                let addr: std::net::SocketAddr = metrics
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--metrics {metrics:?} is not an address; write IP:PORT (e.g. 127.0.0.1:9542) or off"))?;
                if let Err(e) = anypop::telemetry::metrics::serve(addr, Arc::clone(&latest)) {
                    tracing::warn!("{e:#}");
                } else {
                    tracing::info!("metrics on http://{addr}/metrics");
                }
            }
            if unsafe { libc::geteuid() } != 0 {
                bail!(
                    "anypop run loads eBPF programs and attaches XDP: run it as root (or with CAP_BPF and CAP_NET_ADMIN)"
                );
            }
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, Arc::clone(&stop))
                    .context("installing signal handler")?;
            }
            // SIGHUP: re-read the network file and apply it live.
            let reload = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
                .context("installing signal handler")?;
            let net = config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let role = net.node(&node).map_err(|e| anyhow::anyhow!("{e}"))?.role;
            let lock = daemon::DaemonLock::acquire(
                &anypop::dataplane::node_pin_dir(&pin_root, &node),
                &node,
            )?;
            if role == config::Role::Backend {
                return run_backend(
                    &net, &node, &pin_root, interval, duration, &stop, &reload, &config, &lock,
                    &latest,
                );
            }
            let mut pop = daemon::Pop::start_with(&net, &node, &pin_root)?;
            let deadline = duration.map(|d| Instant::now() + Duration::from_secs(d));
            let mut prev = pop.snapshot()?;
            let mut last = Instant::now();
            // Counting LRU entries walks the whole table: every minute, not every summary.
            let mut last_fill: Option<Instant> = None;
            let mut last_metrics = Instant::now() - Duration::from_secs(2);
            while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
                std::thread::sleep(Duration::from_millis(200));
                pop.tick()?;
                if last_metrics.elapsed() >= Duration::from_secs(1) {
                    *latest.lock().unwrap() = pop.metrics()?;
                    last_metrics = Instant::now();
                }
                if reload.swap(false, Ordering::Relaxed) {
                    reload_now(&lock, &config, |net| {
                        let a = pop.apply(net)?;
                        Ok(format!(
                            "config {:016x} live in slot {} (switch #{})",
                            net.source_text_hash, a.generation, a.version
                        ))
                    });
                }
                if last.elapsed() >= Duration::from_secs(interval.max(1)) {
                    let now = pop.snapshot()?;
                    let secs = last.elapsed().as_secs_f64();
                    tracing::info!("{}", anypop::telemetry::summary_line(&prev, &now, secs));
                    if last_fill.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        tracing::info!("{}", pop.fill_line()?);
                        last_fill = Some(Instant::now());
                    }
                    prev = now;
                    last = Instant::now();
                }
            }
            pop.stop(leave_running)
        }
        Command::Status {
            node,
            pin_root,
            window,
        } => {
            let dir = anypop::dataplane::node_pin_dir(&pin_root, &node);
            print!(
                "{}",
                anypop::telemetry::status::report(&dir, &node, Duration::from_secs(window.max(1)))?
            );
            Ok(())
        }
        Command::Apply {
            config,
            node,
            pin_root,
        } => {
            let net = config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let role = net.node(&node).map_err(|e| anyhow::anyhow!("{e}"))?.role;
            let compiled = match role {
                config::Role::Pop => config::compile::compile_edge(
                    &net,
                    &node,
                    0,
                    anypop_common::layout::MAX_SERVICES,
                )
                .map(|_| ()),
                config::Role::Backend => config::compile::compile_backend(&net, &node).map(|_| ()),
            };
            compiled.map_err(|e| anyhow::anyhow!("{e}"))?;
            let answer = daemon::request_apply(
                &anypop::dataplane::node_pin_dir(&pin_root, &node),
                &node,
                &config,
            )?;
            if let Some(err) = answer.strip_prefix("error: ") {
                bail!("{err}");
            }
            println!("{answer}");
            Ok(())
        }
        Command::Bench {
            iterations,
            repeat,
            prefixes,
            throughput,
            frames,
            rounds,
        } => {
            if unsafe { libc::geteuid() } != 0 {
                bail!(
                    "the benchmark loads eBPF programs in a private network namespace: run it as root"
                );
            }
            println!("machine: {}", anypop::bench::machine_facts());
            if throughput {
                let report = anypop::bench::throughput::run(anypop::bench::throughput::Options {
                    frames: frames.max(1000),
                    rounds: rounds.max(1),
                })?;
                println!("{}", report.placement());
                println!("{}", report.table());
                println!("{}", report.ratio_table());
                return Ok(());
            }
            let rows = anypop::bench::run(iterations.max(100), repeat.max(1), &prefixes)?;
            println!("{}", anypop::bench::table(&rows));
            let (parse, compile, write) = anypop::bench::apply_at_scale(64, 1000, 100_000)?;
            println!(
                "config generation at scale (64 services, 1,000 rules, 100,000 prefixes): parse+validate {:.3} s, compile {:.3} s, write+switch {:.3} s, total {:.3} s",
                parse,
                compile,
                write,
                parse + compile + write
            );
            Ok(())
        }
        Command::Lab {
            command:
                LabCommand::Demo {
                    duration,
                    tick_rate,
                },
        } => {
            if unsafe { libc::geteuid() } != 0 {
                bail!("the lab creates network namespaces and loads eBPF programs: run it as root");
            }
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, Arc::clone(&stop))
                    .context("installing signal handler")?;
            }
            let ok = anypop::lab::demo::run(
                anypop::lab::demo::DemoOptions {
                    duration: Duration::from_secs(duration.max(4)),
                    tick_rate,
                },
                stop,
            )?;
            if !ok {
                bail!("the demo's players did not get through");
            }
            Ok(())
        }
    }
}

/// `anypop run` for a backend node: attach decap + DSR, log counters until stopped.
#[allow(clippy::too_many_arguments)]
fn run_backend(
    net: &config::Network,
    node: &str,
    pin_root: &std::path::Path,
    interval: u64,
    duration: Option<u64>,
    stop: &AtomicBool,
    reload: &AtomicBool,
    config_path: &std::path::Path,
    lock: &daemon::DaemonLock,
    latest: &std::sync::Mutex<String>,
) -> anyhow::Result<()> {
    let mut be = daemon::BackendNode::start_with(net, node, pin_root)?;
    let deadline = duration.map(|d| Instant::now() + Duration::from_secs(d));
    let mut prev = be.snapshot()?;
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(snap) = be.snapshot() {
            *latest.lock().unwrap() = anypop::telemetry::metrics::render(node, &snap, 0, &[]);
        }
        if reload.swap(false, Ordering::Relaxed) {
            reload_now(lock, config_path, |net| {
                be.apply(net)?;
                Ok("backend tables replaced".into())
            });
        }
        if last.elapsed() >= Duration::from_secs(interval.max(1)) {
            let now = be.snapshot()?;
            tracing::info!(
                "{}",
                anypop::telemetry::summary_line(&prev, &now, last.elapsed().as_secs_f64())
            );
            prev = now;
            last = Instant::now();
        }
    }
    be.stop()
}

/// One reload (SIGHUP or `anypop apply`): the file `anypop apply` asked for, else the daemon's own;
/// validated and applied by `apply`, the outcome logged and reported back to `anypop apply`. A
/// failure anywhere leaves the running config in place.
fn reload_now(
    lock: &daemon::DaemonLock,
    own: &std::path::Path,
    apply: impl FnOnce(&config::Network) -> anyhow::Result<String>,
) {
    let path = lock.take_apply_request().unwrap_or_else(|| own.to_owned());
    let outcome = config::load(&path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|n| apply(&n));
    let report = match outcome {
        Ok(what) => {
            let m = format!("applied {}: {what}", path.display());
            tracing::info!("{m}");
            m
        }
        Err(e) => {
            let m = format!(
                "{} not applied, the running config stays:\n{e:#}",
                path.display()
            );
            tracing::error!("{m}");
            format!("error: {m}")
        }
    };
    lock.report(&report);
}
