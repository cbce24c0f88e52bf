//! The `anypop` command: one binary for every node and every operator task. This file is the
//! table of subcommands; each one lives in `cmd/`.
mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cmd::{node::*, observe::*, tools::*};

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
    Check(CheckArgs),
    /// Run this machine's part of the network: load, attach, fill maps, report counters.
    Run(RunArgs),
    /// Apply a changed network file to the running daemon of a node, live (validated here first;
    /// a file with any problem never replaces the running config).
    Apply(ApplyArgs),
    /// What a node's data plane is doing: daemon, config version, verdicts with rates, state.
    Status(StatusArgs),
    /// Take a node down on this machine: detach its programs, remove its pinned maps, the VIPs
    /// anypop added to `lo` and its run-time files. Refused while a daemon runs the node.
    Down(DownArgs),
    /// Sample packets from the running edge program into a pcapng file, each with its verdict,
    /// reason, rule and service in the packet comment (tshark -r FILE shows them).
    Capture(CaptureArgs),
    /// Why was this packet dropped? Runs each packet of a capture through the node's running
    /// edge program and prints verdict, reason, rule, service, backend and the packet it would
    /// send. Traced packets count like real ones (counters, rate-limit tokens, flows).
    Trace(TraceArgs),
    /// Check this machine before deployment: kernel, interfaces (native XDP, offloads, queues,
    /// MTU) and a node's needs; each check says ok / warn / FAIL and how to fix it. Exit code 1
    /// when anything FAILs. Without arguments only the kernel is checked.
    Doctor(DoctorArgs),
    /// Benchmark ns/packet of the programs beside an empty program, XDP_DROP and xdp-filter.
    Bench(BenchArgs),
    /// The lab: anycast networks in network namespaces.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
}

impl Command {
    /// The node the command names, if any: checked before it becomes part of any path.
    fn node(&self) -> Option<&str> {
        match self {
            Command::Check(a) => a.node.as_deref(),
            Command::Doctor(a) => a.node.as_deref(),
            Command::Run(a) => Some(&a.at.node),
            Command::Apply(a) => Some(&a.at.node),
            Command::Status(a) => Some(&a.node),
            Command::Down(a) => Some(&a.node),
            Command::Capture(a) => Some(&a.node),
            Command::Trace(a) => Some(&a.node),
            Command::Bench(_) | Command::Lab { .. } => None,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .init();
    match dispatch(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    if let Some(node) = command.node() {
        anypop::config::names::check_node_name(node).map_err(|e| anyhow::anyhow!(e))?;
    }
    match command {
        Command::Check(a) => cmd_check(a),
        Command::Run(a) => cmd_run(a),
        Command::Apply(a) => cmd_apply(a),
        Command::Status(a) => cmd_status(a),
        Command::Down(a) => cmd_down(a),
        Command::Capture(a) => cmd_capture(a),
        Command::Trace(a) => cmd_trace(a),
        Command::Doctor(a) => cmd_doctor(a),
        Command::Bench(a) => cmd_bench(a),
        Command::Lab { command } => cmd_lab(command),
    }
}
