//! The subcommands of the `anypop` binary, one function each (`cmd_*`), grouped by what the
//! operator does: a node's life (`node`), looking at traffic (`observe`), the tools around it
//! (`tools`). Each takes its parsed arguments and returns; printing and exit codes are theirs.
pub mod node;
pub mod observe;
pub mod tools;

use std::{
    path::Path,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::Context;
use anypop::{compile::Names, config};

/// Where the network file lives on a deployed node (the Debian package's place for it).
pub const DEFAULT_CONFIG: &str = "/etc/anypop/network.toml";

/// Fails with a hint when `path` is the default network file and there is none: the operator
/// most likely forgot `--config`, which a bare "no such file" would not say.
pub fn require_default_config(path: &Path) -> anyhow::Result<()> {
    if path.as_os_str() == DEFAULT_CONFIG && !path.exists() {
        anyhow::bail!(
            "no network file at {DEFAULT_CONFIG} (the default place); put it there or pass --config FILE"
        );
    }
    Ok(())
}

/// Reads and validates the network file, with a hint when the default one is missing.
pub fn load_network(path: &Path) -> anyhow::Result<config::Network> {
    require_default_config(path)?;
    Ok(config::load(path)?)
}

/// Compiles the kernel tables of `node` (whatever its role), to prove the file works for it.
pub fn compile_node(net: &config::Network, node: &str) -> anyhow::Result<()> {
    match net.node(node)?.role {
        config::Role::Pop => {
            anypop::compile::compile_edge(net, node, 0, anypop_common::layout::MAX_SERVICES)
                .map(|_| ())?
        }
        config::Role::Backend => anypop::compile::compile_backend(net, node).map(|_| ())?,
    }
    Ok(())
}

/// Names of a POP's rules, services and backends (in counter order) and its first interface,
/// from the network file; None for a backend node.
pub fn pop_names(cfg: &Path, node: &str) -> anyhow::Result<Option<(Names, Option<String>)>> {
    let net = load_network(cfg)?;
    let n = net.node(node)?;
    if n.role != config::Role::Pop {
        return Ok(None);
    }
    let t = anypop::compile::compile_edge(&net, node, 0, anypop_common::layout::MAX_SERVICES)?;
    Ok(Some((t.names, n.interfaces.first().cloned())))
}

/// A flag set by SIGINT or SIGTERM: long-running commands stop cleanly (and clean up) on it.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    Ok(stop)
}

/// Fails unless this process runs as root, saying what the command needs it for.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("{what}: run it as root");
    }
    Ok(())
}
