//! The tools around the data plane: `doctor` (is this machine ready?), `bench` (what the
//! programs cost), `lab` (an anycast network in namespaces).
use std::{path::PathBuf, sync::atomic::Ordering, time::Duration};

use anyhow::{Context, bail};

use super::{require_root, stop_on_signals};

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// The network file (with --node: check that node's interfaces and needs).
    #[arg(long, short, requires = "node")]
    pub config: Option<PathBuf>,
    /// This machine's node name in the network file.
    #[arg(long, requires = "config")]
    pub node: Option<String>,
    /// An interface to check (repeatable), besides the node's.
    #[arg(long = "interface", value_name = "IF")]
    pub interfaces: Vec<String>,
    /// Print the report as JSON (same verdicts and exit code).
    #[arg(long)]
    pub json: bool,
}

pub fn cmd_doctor(a: DoctorArgs) -> anyhow::Result<()> {
    let report = anypop::doctor::run(&anypop::doctor::Options {
        config: a.config,
        node: a.node,
        interfaces: a.interfaces,
    })?;
    if a.json {
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

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Single-run samples per path.
    #[arg(long, default_value_t = 20_000)]
    pub iterations: u32,
    /// Repetitions per sample for the `repeat` method.
    #[arg(long, default_value_t = 200_000)]
    pub repeat: u32,
    /// Blocklist sizes to measure (flatness from 1 to 100,000 prefixes).
    #[arg(long, value_delimiter = ',', default_value = "1,1000,100000")]
    pub prefixes: Vec<usize>,
    /// Instead: Mpps through a veth pair (flood drop and forward) beside bare XDP_DROP /
    /// XDP_TX, xdp-filter and nftables (docs/BENCHMARKS.md, "Throughput").
    #[arg(long)]
    pub throughput: bool,
    /// With --throughput: frames per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    pub frames: u32,
    /// With --throughput: rounds (every program once per round, interleaved).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// With --throughput: only the forward path and its baseline (bare XDP_TX).
    #[arg(long)]
    pub forward_only: bool,
    /// With --throughput: the DUT on the generator's CPU (veth recycles pages on one CPU,
    /// as a NIC driver does) instead of a CPU of its own.
    #[arg(long)]
    pub one_cpu: bool,
}

pub fn cmd_bench(a: BenchArgs) -> anyhow::Result<()> {
    require_root("the benchmark loads eBPF programs in a private network namespace")?;
    println!("machine: {}", anypop::bench::machine_facts());
    if a.throughput {
        let report = anypop::bench::throughput::run(anypop::bench::throughput::Options {
            frames: a.frames.max(1000),
            rounds: a.rounds.max(1),
            forward_only: a.forward_only,
            one_cpu: a.one_cpu,
        })?;
        println!("{}", report.placement());
        println!("{}", report.table());
        println!("{}", report.ratio_table());
        return Ok(());
    }
    let rows = anypop::bench::run(a.iterations.max(100), a.repeat.max(1), &a.prefixes)?;
    println!("{}", anypop::bench::table(&rows));
    let s = anypop::bench::apply_at_scale(64, 1000, 100_000)?;
    println!(
        "config generation at scale (64 services, 1,000 rules, 100,000 prefixes): parse+validate {:.3} s, compile {:.3} s, write+switch {:.3} s, total {:.3} s",
        s.parse,
        s.compile,
        s.write,
        s.parse + s.compile + s.write
    );
    println!(
        "small change (one prefix added to the shared blocklist): {:.3} s in all; rewrote {} trie entries, DIR-24-8 table {}, {} Maglev tables",
        s.small_change,
        s.small_written.trie_writes,
        if s.small_written.dir_rewritten {
            "rewritten"
        } else {
            "kept"
        },
        s.small_written.maglev_tables
    );
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum LabCommand {
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

fn check_players(players: usize) -> anyhow::Result<()> {
    if !(1..=24).contains(&players) {
        bail!("--players must be between 1 and 24");
    }
    Ok(())
}

pub fn cmd_lab(command: LabCommand) -> anyhow::Result<()> {
    require_root("the lab creates network namespaces and loads eBPF programs")?;
    let stop = stop_on_signals()?;
    let binary = std::env::current_exe().context("finding the anypop binary")?;
    match command {
        LabCommand::Demo {
            duration,
            tick_rate,
            players,
            flood_pps,
            flood,
        } => {
            check_players(players)?;
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
            check_players(players)?;
            println!("machine: {}", anypop::bench::machine_facts());
            let phases =
                anypop::lab::loadtest::run(&binary, players, tick_rate, seconds.max(1), applies)?;
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
