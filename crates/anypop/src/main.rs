//! The `anypop` command: one binary for every node and every operator task.
use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use anypop::{compile, config, daemon};

/// Where the network file lives on a deployed node (the Debian package's place for it).
const DEFAULT_CONFIG: &str = "/etc/anypop/network.toml";

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
        /// The network file (the same on every node).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also compile the kernel tables for this node.
        #[arg(long)]
        node: Option<String>,
        /// Warnings (prefixes with host bits, a service whose every backend drains, …) are
        /// errors.
        #[arg(long)]
        strict: bool,
    },
    /// Run this machine's part of the network: load, attach, fill maps, report counters.
    Run {
        /// The network file (the same on every node).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
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
        /// On exit, detach the programs. By default the attachments are pinned and the data
        /// plane keeps running without the daemon; the next `anypop run` (or a newer anypop)
        /// adopts it, replacing the programs in place without losing a packet.
        #[arg(long, conflicts_with = "leave_running")]
        detach: bool,
        /// Leave the data plane running on exit (the default; kept for scripts).
        #[arg(long, hide = true)]
        leave_running: bool,
        /// Stop after this many seconds (for scripts and tests); default: until SIGINT/SIGTERM.
        #[arg(long)]
        duration: Option<u64>,
        /// Prometheus metrics listen address ("off" to disable).
        #[arg(long, default_value = "127.0.0.1:9542")]
        metrics: String,
        /// Do not apply the network file when it changes on disk (SIGHUP and `anypop apply`
        /// still do).
        #[arg(long)]
        no_watch: bool,
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
        /// With --throughput: only the forward path and its baseline (bare XDP_TX).
        #[arg(long)]
        forward_only: bool,
        /// With --throughput: the DUT on the generator's CPU (veth recycles pages on one CPU,
        /// as a NIC driver does) instead of a CPU of its own.
        #[arg(long)]
        one_cpu: bool,
    },
    /// What a node's data plane is doing: daemon, config version, verdicts with rates, state.
    Status {
        #[arg(long)]
        node: String,
        #[arg(long, default_value_os_t = anypop::dataplane::pin_root())]
        pin_root: PathBuf,
        /// Seconds over which rates and the programs' cost are measured.
        #[arg(long, default_value_t = 1)]
        window: u64,
        /// The network file, to name rules and services (optional).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Apply a changed network file to the running daemon of a node, live (validated here first;
    /// a file with any problem never replaces the running config).
    Apply {
        /// The network file (the same on every node).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        node: String,
        #[arg(long, default_value_os_t = anypop::dataplane::pin_root())]
        pin_root: PathBuf,
        /// Apply what can be applied live even when some changes (interfaces, table sizes,
        /// xdp_mode) take a restart of the daemon; without it such a file is refused whole.
        #[arg(long)]
        allow_restart_needed: bool,
    },
    /// Take a node down on this machine: detach its programs, remove its pinned maps, the VIPs
    /// anypop added to `lo` and its run-time files. Refused while a daemon runs the node.
    Down {
        #[arg(long)]
        node: String,
        #[arg(long, default_value_os_t = anypop::dataplane::pin_root())]
        pin_root: PathBuf,
        /// Keep the state maps (flows, rate-limit buckets) for a later `anypop run`.
        #[arg(long)]
        keep_state: bool,
    },
    /// Sample packets from the running edge program into a pcapng file, each with its verdict,
    /// reason, rule and service in the packet comment (tshark -r FILE shows them).
    Capture {
        #[arg(long)]
        node: String,
        /// The pcapng file to write.
        #[arg(short = 'w', long = "write")]
        out: PathBuf,
        /// Only these verdict reasons (repeat the flag; default: every reason).
        #[arg(long = "reason")]
        reasons: Vec<String>,
        /// Only this service (needs --config).
        #[arg(long)]
        service: Option<String>,
        /// Stop after this many packets.
        #[arg(long, default_value_t = 100)]
        count: u64,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
        /// Samples per second at most (over all CPUs): a flood cannot overload the capture.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// The network file, to name rules and services.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, default_value_os_t = anypop::dataplane::pin_root())]
        pin_root: PathBuf,
        /// Replace FILE if it exists (only a regular file of this user, by a new file renamed
        /// over it; a symbolic link is never followed or replaced).
        #[arg(long)]
        force: bool,
    },
    /// Why was this packet dropped? Runs each packet of a capture through the node's running
    /// edge program and prints verdict, reason, rule, service, backend and the packet it would
    /// send. Traced packets count like real ones (counters, rate-limit tokens, flows).
    Trace {
        /// A pcap or pcapng file of Ethernet frames (tcpdump -w, anypop capture).
        #[arg(long)]
        pcap: PathBuf,
        #[arg(long)]
        node: String,
        /// The network file: names rules, services and backends, and gives the interface.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The interface whose program to trace (default: the node's first).
        #[arg(long)]
        interface: Option<String>,
        #[arg(long, default_value_os_t = anypop::dataplane::pin_root())]
        pin_root: PathBuf,
    },
    /// The lab: anycast networks in network namespaces.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// Check this machine before deployment: kernel, interfaces (native XDP, offloads, queues,
    /// MTU) and a node's needs; each check says ok / warn / FAIL and how to fix it. Exit code 1
    /// when anything FAILs. Without arguments only the kernel is checked.
    Doctor {
        /// The network file (with --node: check that node's interfaces and needs).
        #[arg(long, short, requires = "node")]
        config: Option<PathBuf>,
        /// This machine's node name in the network file.
        #[arg(long, requires = "config")]
        node: Option<String>,
        /// An interface to check (repeatable), besides the node's.
        #[arg(long = "interface", value_name = "IF")]
        interfaces: Vec<String>,
        /// Print the report as JSON (same verdicts and exit code).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Players keep playing while a flood hits the anycast VIP and their route flaps between POPs.
    Demo {
        /// Seconds to run.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Player packets per second (a game's tick rate).
        #[arg(long, default_value_t = 64)]
        tick_rate: u32,
        /// UDP players (1-24).
        #[arg(long, default_value_t = 8)]
        players: usize,
        /// Flood frames per second over all POPs; 0 sends as fast as the generator can.
        #[arg(long, default_value_t = 500_000)]
        flood_pps: u64,
        /// Flood kind: udp, syn or icmp.
        #[arg(long, default_value = "udp")]
        flood: anypop::dataplane::trafficgen::FloodKind,
    },
    /// Players' loss and RTT with no flood, then with the generator's maximum flood (a benchmark).
    LoadTest {
        /// Seconds per phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// UDP players.
        #[arg(long, default_value_t = 8)]
        players: usize,
        #[arg(long, default_value_t = 64)]
        tick_rate: u32,
        /// Also switch the POPs' config this many times under legitimate load and account for
        /// every frame (0: skip).
        #[arg(long, default_value_t = 100)]
        applies: usize,
    },
    /// Build the lab (namespaces, POPs, backends, daemons) and keep it until Ctrl-C, to explore
    /// it by hand (`ip netns exec NS …`, `anypop status --pin-root … --node pop-1`).
    Up {
        /// POPs announcing the VIP.
        #[arg(long, default_value_t = 2)]
        pops: usize,
        /// Backends with game servers.
        #[arg(long, default_value_t = 2)]
        backends: usize,
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

/// The node a command names, if any: checked before it becomes part of any path.
fn node_of(c: &Command) -> Option<&str> {
    match c {
        Command::Check { node, .. } | Command::Doctor { node, .. } => node.as_deref(),
        Command::Run { node, .. }
        | Command::Status { node, .. }
        | Command::Apply { node, .. }
        | Command::Down { node, .. }
        | Command::Capture { node, .. }
        | Command::Trace { node, .. } => Some(node),
        Command::Bench { .. } | Command::Lab { .. } => None,
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    if let Some(node) = node_of(&cli.command) {
        config::names::check_node_name(node).map_err(|e| anyhow::anyhow!(e))?;
    }
    let default_config_missing =
        |c: &std::path::Path| c.as_os_str() == DEFAULT_CONFIG && !c.exists();
    if let Command::Check { config, .. }
    | Command::Run { config, .. }
    | Command::Apply { config, .. } = &cli.command
        && default_config_missing(config)
    {
        bail!(
            "no network file at {DEFAULT_CONFIG} (the default place); put it there or pass --config FILE"
        );
    }
    match cli.command {
        Command::Check {
            config,
            node,
            strict,
        } => {
            let mut net = config::load(&config)?;
            if strict {
                net = net.strict()?;
            }
            for w in net.warning_lines() {
                eprintln!("warning: {w}");
            }
            if let Some(node) = node {
                let role = net.node(&node)?.role;
                let compiled = match role {
                    config::Role::Pop => {
                        compile::compile_edge(&net, &node, 0, anypop_common::layout::MAX_SERVICES)
                            .map(|_| ())
                    }
                    config::Role::Backend => compile::compile_backend(&net, &node).map(|_| ()),
                };
                compiled?;
            }
            println!("{}: OK — {}", config.display(), daemon::describe(&net));
            Ok(())
        }
        Command::Run {
            config,
            node,
            pin_root,
            interval,
            detach,
            leave_running: _,
            duration,
            metrics,
            no_watch,
        } => {
            let metrics = match metrics.as_str() {
                "off" => None,
                m => Some(m.parse::<std::net::SocketAddr>().map_err(|_| {
                    anyhow::anyhow!(
                        "--metrics {m:?} is not an address; write IP:PORT (e.g. 127.0.0.1:9542) or off"
                    )
                })?),
            };
            anypop::sys::privileges::require(
                anypop::sys::privileges::DAEMON,
                "anypop run loads eBPF programs and attaches XDP",
            )?;
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, Arc::clone(&stop))
                    .context("installing signal handler")?;
            }
            // SIGHUP: re-read the network file and apply it live.
            let reload = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
                .context("installing signal handler")?;
            daemon::run::run(
                daemon::run::RunOptions {
                    config,
                    node,
                    pin_root,
                    interval: Duration::from_secs(interval.max(1)),
                    leave_running: !detach,
                    duration: duration.map(Duration::from_secs),
                    metrics,
                    watch: !no_watch,
                },
                &stop,
                &reload,
            )
        }
        Command::Down {
            node,
            pin_root,
            keep_state,
        } => {
            anypop::sys::privileges::require(
                anypop::sys::privileges::DAEMON,
                "anypop down detaches programs and removes pins",
            )?;
            let removed = daemon::down::down(&pin_root, &node, keep_state)?;
            println!("{}", removed.describe(&node));
            Ok(())
        }
        Command::Status {
            node,
            pin_root,
            window,
            config,
        } => {
            let dir = anypop::dataplane::node_pin_dir(&pin_root, &node);
            let names = match &config {
                Some(cfg) => pop_names(cfg, &node)?.map(|(n, _)| n).unwrap_or_default(),
                None => Default::default(),
            };
            print!(
                "{}",
                anypop::telemetry::status::report_named(
                    &dir,
                    &node,
                    Duration::from_secs(window.max(1)),
                    &names
                )?
            );
            Ok(())
        }
        Command::Apply {
            config,
            node,
            pin_root,
            allow_restart_needed,
        } => {
            let net = config::load(&config)?;
            let role = net.node(&node)?.role;
            let compiled = match role {
                config::Role::Pop => {
                    compile::compile_edge(&net, &node, 0, anypop_common::layout::MAX_SERVICES)
                        .map(|_| ())
                }
                config::Role::Backend => compile::compile_backend(&net, &node).map(|_| ()),
            };
            compiled?;
            let abs = std::fs::canonicalize(&config)
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            let answer = daemon::control::ask(
                &daemon::rundir::socket_path(&anypop::dataplane::node_pin_dir(&pin_root, &node)),
                &node,
                &daemon::control::Request::Apply {
                    config: abs,
                    allow_restart_needed,
                },
                Duration::from_secs(120),
            )?;
            if !answer.ok {
                bail!("{}", answer.message);
            }
            println!("{}", answer.message);
            Ok(())
        }
        Command::Bench {
            iterations,
            repeat,
            prefixes,
            throughput,
            frames,
            rounds,
            forward_only,
            one_cpu,
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
                    forward_only,
                    one_cpu,
                })?;
                println!("{}", report.placement());
                println!("{}", report.table());
                println!("{}", report.ratio_table());
                return Ok(());
            }
            let rows = anypop::bench::run(iterations.max(100), repeat.max(1), &prefixes)?;
            println!("{}", anypop::bench::table(&rows));
            let a = anypop::bench::apply_at_scale(64, 1000, 100_000)?;
            println!(
                "config generation at scale (64 services, 1,000 rules, 100,000 prefixes): parse+validate {:.3} s, compile {:.3} s, write+switch {:.3} s, total {:.3} s",
                a.parse,
                a.compile,
                a.write,
                a.parse + a.compile + a.write
            );
            println!(
                "small change (one prefix added to the shared blocklist): {:.3} s in all; rewrote {} trie entries, DIR-24-8 table {}, {} Maglev tables",
                a.small_change,
                a.small_written.trie_writes,
                if a.small_written.dir_rewritten {
                    "rewritten"
                } else {
                    "kept"
                },
                a.small_written.maglev_tables
            );
            Ok(())
        }
        Command::Capture {
            node,
            out,
            reasons,
            service,
            count,
            duration,
            rate,
            config,
            pin_root,
            force,
        } => {
            if unsafe { libc::geteuid() } != 0 {
                bail!("capture reads the node's pinned maps: run it as root");
            }
            let reasons = reasons
                .iter()
                .map(|r| {
                    anypop_common::verdict::Reason::ALL
                        .iter()
                        .copied()
                        .find(|x| x.name() == r)
                        .ok_or_else(|| {
                            let all: Vec<&str> = anypop_common::verdict::Reason::ALL
                                .iter()
                                .map(|x| x.name())
                                .collect();
                            anyhow::anyhow!(
                                "--reason {r:?} is not a verdict reason; one of: {}",
                                all.join(", ")
                            )
                        })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let names = match &config {
                Some(cfg) => trace_names(cfg, &node)?.0,
                None => Default::default(),
            };
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, Arc::clone(&stop))
                    .context("installing signal handler")?;
            }
            let n = anypop::telemetry::capture::capture_to(
                &anypop::dataplane::node_pin_dir(&pin_root, &node),
                &names,
                &anypop::telemetry::capture::CaptureRequest {
                    reasons,
                    service,
                    count,
                    duration: duration.map(Duration::from_secs),
                    rate,
                },
                &out,
                force,
                &stop,
                &|n| eprintln!("captured {n} packets so far …"),
            )?;
            println!("{n} packets written to {}", out.display());
            Ok(())
        }
        Command::Trace {
            pcap,
            node,
            config,
            interface,
            pin_root,
        } => {
            if unsafe { libc::geteuid() } != 0 {
                bail!("trace runs the node's eBPF program: run it as root");
            }
            let (names, first_if) = match &config {
                Some(cfg) => trace_names(cfg, &node)?,
                None => (Default::default(), None),
            };
            let ifname = interface.or(first_if).ok_or_else(|| {
                anyhow::anyhow!("which interface? give --config FILE (its node's first interface) or --interface IF")
            })?;
            let capture = anypop::telemetry::trace::read_capture(&pcap)?;
            let frames = &capture.frames;
            let tracer = anypop::telemetry::trace::Tracer::new(
                &anypop::dataplane::node_pin_dir(&pin_root, &node),
                &ifname,
                names,
            )?;
            println!(
                "tracing {} packets of {} through the edge program running on {ifname} (node {node})",
                frames.len(),
                pcap.display()
            );
            for (i, f) in frames.iter().enumerate() {
                let t = tracer.trace(f)?;
                println!("{}", anypop::telemetry::trace::line(i + 1, &t));
            }
            if let Some(w) = &capture.warning {
                eprintln!("warning: {w}");
            }
            Ok(())
        }
        Command::Lab { command } => {
            if unsafe { libc::geteuid() } != 0 {
                bail!("the lab creates network namespaces and loads eBPF programs: run it as root");
            }
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, Arc::clone(&stop))
                    .context("installing signal handler")?;
            }
            let binary = std::env::current_exe().context("finding the anypop binary")?;
            match command {
                LabCommand::Demo {
                    duration,
                    tick_rate,
                    players,
                    flood_pps,
                    flood,
                } => {
                    if !(1..=24).contains(&players) {
                        bail!("--players must be between 1 and 24");
                    }
                    let ok = anypop::lab::demo::run(
                        anypop::lab::demo::DemoOptions {
                            duration: Duration::from_secs(duration.max(5)),
                            tick_rate,
                            players,
                            flood_pps,
                            flood_kind: flood,
                        },
                        &binary,
                        stop,
                    )?;
                    if !ok {
                        bail!("the demo's players did not get through cleanly");
                    }
                    Ok(())
                }
                LabCommand::LoadTest {
                    seconds,
                    players,
                    tick_rate,
                    applies,
                } => {
                    if !(1..=24).contains(&players) {
                        bail!("--players must be between 1 and 24");
                    }
                    println!("machine: {}", anypop::bench::machine_facts());
                    let phases = anypop::lab::loadtest::run(
                        &binary,
                        players,
                        tick_rate,
                        seconds.max(1),
                        applies,
                    )?;
                    println!("{phases}");
                    Ok(())
                }
                LabCommand::Up { pops, backends } => {
                    let lab = anypop::lab::topology::Lab::build(
                        anypop::lab::topology::Topology { pops, backends },
                        &binary,
                        &|s| println!("lab: {s} …"),
                    )?;
                    println!("{}", lab.describe());
                    println!("Ctrl-C removes everything.");
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    println!("cleaning up: daemons, namespaces, pins");
                    Ok(())
                }
            }
        }
        Command::Doctor {
            config,
            node,
            interfaces,
            json,
        } => {
            let report = anypop::doctor::run(&anypop::doctor::Options {
                config,
                node,
                interfaces,
            })?;
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.render());
            }
            if !report.passed() {
                // The summary line above is the message; exit 1 without an extra "error:" line.
                use std::io::Write;
                let _ = std::io::stdout().flush();
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Names of a POP's rules, services and backends (in counter order) and its first interface,
/// from the network file; None for a backend node.
fn pop_names(
    cfg: &std::path::Path,
    node: &str,
) -> anyhow::Result<Option<(compile::Names, Option<String>)>> {
    let net = config::load(cfg)?;
    let n = net.node(node)?;
    if n.role != config::Role::Pop {
        return Ok(None);
    }
    let t = compile::compile_edge(&net, node, 0, anypop_common::layout::MAX_SERVICES)?;
    Ok(Some((t.names, n.interfaces.first().cloned())))
}

/// [`pop_names`] for trace and capture, which work on a POP's edge program only.
fn trace_names(
    cfg: &std::path::Path,
    node: &str,
) -> anyhow::Result<(compile::Names, Option<String>)> {
    pop_names(cfg, node)?.ok_or_else(|| {
        anyhow::anyhow!("node {node} is a backend; trace and capture work on a POP's edge program")
    })
}
