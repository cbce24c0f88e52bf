//! `anypop run`: the daemon's loop over one node's data plane — requests from the control
//! socket, reloads (SIGHUP, the file watch), metrics, the counter summary — until it is stopped.
//! Nothing in the loop ends the daemon but a stop: a failed reading of the maps or a fault of
//! the network is logged and retried, and the data plane (pinned since it was attached) keeps
//! running whatever happens to this process.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::anyhow;

use super::{
    BackendNode, FileWatch, Pop,
    control::{Answer, ControlServer, Request},
};
use crate::{
    config::{self, Network, Role},
    dataplane::node_pin_dir,
    sys::rundir::{DaemonLock, socket_path},
    telemetry::Snapshot,
};

/// What `anypop run` was asked to do.
pub struct RunOptions {
    pub config: PathBuf,
    pub node: String,
    pub pin_root: PathBuf,
    /// Between counter summaries.
    pub interval: Duration,
    /// Leave the data plane running on exit (the default) or detach it.
    pub leave_running: bool,
    /// Stop after this long (scripts and tests).
    pub duration: Option<Duration>,
    pub metrics: Option<SocketAddr>,
    /// Apply the network file when it changes on disk.
    pub watch: bool,
}

/// The node's data plane, whichever its role.
enum Plane {
    Pop(Box<Pop>),
    Backend(Box<BackendNode>),
}

impl Plane {
    fn start(net: &Network, node: &str, pin_root: &Path) -> anyhow::Result<Plane> {
        let role = net.node(node)?.role;
        Ok(match role {
            Role::Pop => Plane::Pop(Box::new(Pop::start_with(net, node, pin_root)?)),
            Role::Backend => {
                Plane::Backend(Box::new(BackendNode::start_with(net, node, pin_root)?))
            }
        })
    }

    /// Makes `net` live; says what was done.
    fn apply(&mut self, net: &Network) -> anyhow::Result<String> {
        match self {
            Plane::Pop(pop) => {
                let a = pop.apply(net)?;
                Ok(format!(
                    "config {:016x} live in slot {} (switch #{}; rewrote {} source-trie entries, {} Maglev tables, DIR-24-8 table {})",
                    net.source_text_hash,
                    a.generation,
                    a.version,
                    a.written.trie_writes,
                    a.written.maglev_tables,
                    if a.written.dir_rewritten {
                        "rewritten"
                    } else {
                        "kept"
                    }
                ))
            }
            Plane::Backend(be) => {
                be.apply(net)?;
                Ok("backend tables replaced".into())
            }
        }
    }

    fn restart_needed(&self, net: &Network) -> Vec<String> {
        match self {
            Plane::Pop(p) => p.restart_needed(net),
            Plane::Backend(b) => b.restart_needed(net),
        }
    }

    fn tick(&mut self) {
        if let Plane::Pop(p) = self {
            p.tick();
        }
    }

    fn metrics(&mut self, node: &str) -> anyhow::Result<String> {
        match self {
            Plane::Pop(p) => p.metrics(),
            Plane::Backend(b) => Ok(crate::telemetry::metrics::render(
                node,
                &b.snapshot()?,
                0,
                &[],
            )),
        }
    }

    fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        match self {
            Plane::Pop(p) => p.snapshot(),
            Plane::Backend(b) => b.snapshot(),
        }
    }

    /// The state tables' fill, for POPs (backends have no table worth watching).
    fn fill_line(&mut self) -> Option<anyhow::Result<String>> {
        match self {
            Plane::Pop(p) => Some(p.fill_line()),
            Plane::Backend(_) => None,
        }
    }

    fn stop(self, leave_running: bool) -> anyhow::Result<()> {
        match self {
            Plane::Pop(p) => p.stop(leave_running),
            Plane::Backend(b) => b.stop(leave_running),
        }
    }
}

/// Runs the node until `stop` is set (or the duration is over); `reload` is SIGHUP's flag.
pub fn run(opts: RunOptions, stop: &AtomicBool, reload: &AtomicBool) -> anyhow::Result<()> {
    // The node's name becomes part of paths (pins, run dir): it must be a plain name.
    config::names::check_node_name(&opts.node).map_err(|e| anyhow!(e))?;
    let net = config::load(&opts.config)?;
    for w in net.warning_lines() {
        tracing::warn!("{w}");
    }
    net.node(&opts.node)?;
    let pin_dir = node_pin_dir(&opts.pin_root, &opts.node);
    let lock = DaemonLock::acquire(&pin_dir, &opts.node)?;
    let mut plane = Plane::start(&net, &opts.node, &opts.pin_root)?;
    // From here on the data plane is attached and pinned: nothing below may end the daemon
    // with it detached, and a failure to offer a control socket or metrics is the daemon's
    // problem, not the players'.
    let control = ControlServer::bind(&socket_path(&pin_dir))?;
    let latest = Arc::new(Mutex::new(String::new()));
    if let Some(addr) = opts.metrics {
        match crate::telemetry::metrics::serve(addr, Arc::clone(&latest)) {
            Ok(bound) => tracing::info!("metrics on http://{bound}/metrics"),
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
    // The first state reading and metrics text exist before anyone is told we are ready.
    if let Some(Ok(line)) = plane.fill_line() {
        tracing::info!("{line}");
    }
    let mut last_fill = Some(Instant::now());
    render_metrics(&mut plane, &opts.node, &latest);
    let mut last_metrics = Some(Instant::now());
    super::notify::ready(&format!("node {} serving", opts.node));
    tracing::info!(
        "ready: node {} serving; control socket {}",
        opts.node,
        socket_path(&pin_dir).display()
    );
    let mut state = LoopState {
        own: opts.config.clone(),
        watch: opts.watch.then(|| FileWatch::new(&opts.config)),
    };
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let mut prev = plane.snapshot()?;
    let mut last = Instant::now();
    // Counting LRU entries walks the whole table: every minute, not every summary.
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        if let Some(pending) = control.next(Duration::from_millis(200)) {
            let Request::Apply {
                config,
                allow_restart_needed,
            } = pending.request.clone();
            let answer = state.apply(&mut plane, &config, allow_restart_needed);
            // Metrics show the new config before the client hears it is live.
            render_metrics(&mut plane, &opts.node, &latest);
            last_metrics = Some(Instant::now());
            pending.answer(answer);
        }
        plane.tick();
        if last_metrics.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            render_metrics(&mut plane, &opts.node, &latest);
            last_metrics = Some(Instant::now());
        }
        if state.watch.as_mut().is_some_and(|w| w.changed()) {
            tracing::info!("{} changed on disk: applying it", state.own.display());
            reload.store(true, Ordering::Relaxed);
        }
        if reload.swap(false, Ordering::Relaxed) {
            let own = state.own.clone();
            state.apply(&mut plane, &own, true);
        }
        if last.elapsed() >= opts.interval {
            match plane.snapshot() {
                Ok(now) => {
                    let secs = last.elapsed().as_secs_f64();
                    tracing::info!("{}", crate::telemetry::summary_line(&prev, &now, secs));
                    prev = now;
                }
                Err(e) => tracing::warn!("reading the counters: {e:#}"),
            }
            if last_fill.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                match plane.fill_line() {
                    Some(Ok(line)) => tracing::info!("{line}"),
                    Some(Err(e)) => tracing::warn!("reading the state tables' fill: {e:#}"),
                    None => {}
                }
                last_fill = Some(Instant::now());
            }
            last = Instant::now();
        }
    }
    let r = plane.stop(opts.leave_running);
    drop(lock);
    r
}

/// Renders the node's metrics text for the server thread (a failed reading is a warning: the
/// last text stays).
fn render_metrics(plane: &mut Plane, node: &str, latest: &Mutex<String>) {
    match plane.metrics(node) {
        Ok(text) => *latest.lock().unwrap_or_else(|p| p.into_inner()) = text,
        Err(e) => tracing::warn!("reading the counters for metrics: {e:#}"),
    }
}

/// Which file is the daemon's own (the one SIGHUP and the watch re-read).
struct LoopState {
    own: PathBuf,
    watch: Option<FileWatch>,
}

impl LoopState {
    /// One apply (SIGHUP, the watch, or `anypop apply`), logged and answered. A file with any
    /// problem leaves the running config in place. A file applied through `anypop apply` becomes
    /// the daemon's own: SIGHUP, the watch and the next restart's operator see the same file.
    fn apply(&mut self, plane: &mut Plane, path: &Path, allow_restart_needed: bool) -> Answer {
        if let Some(w) = self.watch.as_mut().filter(|_| path == self.own) {
            w.mark_seen();
        }
        let net = match config::load(path) {
            Ok(net) => net,
            Err(e) => return refused(path, &e.into(), Vec::new()),
        };
        for w in net.warning_lines() {
            tracing::warn!("{w}");
        }
        let restart_needed = plane.restart_needed(&net);
        if !restart_needed.is_empty() && !allow_restart_needed {
            let m = format!(
                "{} not applied, the running config stays: these changes take a restart of the daemon: {}.\nRestart it (anypop run), or apply with --allow-restart-needed to make everything else live now",
                path.display(),
                restart_needed.join("; ")
            );
            tracing::error!("{m}");
            return Answer {
                ok: false,
                message: m,
                restart_needed,
            };
        }
        match plane.apply(&net) {
            Ok(what) => {
                let mut m = format!("applied {}: {what}", path.display());
                if !restart_needed.is_empty() {
                    m.push_str(&format!(
                        "\nnot live until the daemon restarts: {}",
                        restart_needed.join("; ")
                    ));
                }
                if path != self.own {
                    self.own = path.to_owned();
                    if let Some(w) = self.watch.as_mut() {
                        w.switch_to(path);
                    }
                    m.push_str(&format!(
                        "\nthe daemon's network file is now {} (SIGHUP and the file watch re-read it; start the next daemon with it)",
                        path.display()
                    ));
                }
                tracing::info!("{m}");
                Answer {
                    ok: true,
                    message: m,
                    restart_needed,
                }
            }
            Err(e) => refused(path, &e, restart_needed),
        }
    }
}

fn refused(path: &Path, e: &anyhow::Error, restart_needed: Vec<String>) -> Answer {
    let m = format!(
        "{} not applied, the running config stays:\n{e:#}",
        path.display()
    );
    tracing::error!("{m}");
    Answer {
        ok: false,
        message: m,
        restart_needed,
    }
}
