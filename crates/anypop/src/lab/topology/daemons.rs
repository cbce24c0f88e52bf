//! The lab's daemons: one `anypop run` child per node, started, waited for, given new network
//! files with `anypop apply`, restarted (adopting the running data plane) and stopped.
use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::Lab;

/// One `anypop run` child process.
pub(super) struct Daemon {
    pub(super) node: String,
    child: Child,
    log: PathBuf,
}

impl Lab {
    pub(super) fn start_daemon(&mut self, node: &str, backend: bool) -> anyhow::Result<()> {
        let ns = if backend {
            &self.backends[node[3..].parse::<usize>()? - 1]
        } else {
            &self.pops[node[4..].parse::<usize>()? - 1]
        };
        let log = self.dir.join(format!("{node}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = ns
            .command(&self.binary)?
            .args(["run", "--config"])
            .arg(&self.network_path)
            .args(["--node", node, "--pin-root"])
            .arg(&self.pin_root)
            .args(["--interval", "5", "--metrics", "off"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} run", self.binary.display()))?;
        self.daemons.push(Daemon {
            node: node.to_owned(),
            child,
            log,
        });
        Ok(())
    }

    /// Waits until every daemon has attached its programs (and backends have their VIP on lo);
    /// a daemon that exits instead fails the build with its log.
    pub(super) fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            for d in &mut self.daemons {
                if let Some(status) = d.child.try_wait()? {
                    bail!(
                        "anypop run --node {} exited ({status}) while the lab started:\n{}",
                        d.node,
                        tail(&d.log, 20)
                    );
                }
            }
            // Each daemon says so once its programs are attached (and a backend's VIPs are on
            // lo): the same signal a service manager waits for.
            let all_ready = self.daemons.iter().all(|d| {
                std::fs::read_to_string(&d.log)
                    .is_ok_and(|l| l.contains(&format!("ready: node {} serving", d.node)))
            });
            if all_ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .daemons
                    .iter()
                    .map(|d| format!("--- {}\n{}", d.node, tail(&d.log, 10)))
                    .collect();
                bail!(
                    "the lab's daemons did not attach within 90 s:\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Applies a new network file to every running daemon with `anypop apply` (validated first,
    /// switched live); fails with the first daemon's refusal.
    pub fn apply(&self, network: &str) -> anyhow::Result<()> {
        let all: Vec<String> = self.daemons.iter().map(|d| d.node.clone()).collect();
        self.apply_to(&all, network)
    }

    /// [`Lab::apply`] for some nodes only.
    pub fn apply_to(&self, nodes: &[String], network: &str) -> anyhow::Result<()> {
        let path = self.dir.join("network-new.toml");
        std::fs::write(&path, network)?;
        for d in self.daemons.iter().filter(|d| nodes.contains(&d.node)) {
            let out = std::process::Command::new(&self.binary)
                .args(["apply", "--config"])
                .arg(&path)
                .args(["--node", &d.node, "--pin-root"])
                .arg(&self.pin_root)
                .output()?;
            if !out.status.success() {
                bail!(
                    "anypop apply --node {} failed: {}",
                    d.node,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        std::fs::copy(&path, &self.network_path)?;
        Ok(())
    }

    /// The last lines of a node's daemon log.
    pub fn log_tail(&self, node: &str, lines: usize) -> String {
        self.daemons
            .iter()
            .find(|d| d.node == node)
            .map(|d| tail(&d.log, lines))
            .unwrap_or_default()
    }

    /// Stops a node's daemon (it leaves its data plane running, pinned) and starts a new one,
    /// which adopts the running programs by replacing them in place: a restart or an upgrade.
    /// Returns once the new daemon has taken over every attachment.
    pub fn restart_daemon(&mut self, node: &str) -> anyhow::Result<()> {
        let pos = self
            .daemons
            .iter()
            .position(|d| d.node == node)
            .with_context(|| format!("no daemon runs {node}"))?;
        let mut d = self.daemons.remove(pos);
        let adopted_before = tail(&d.log, 100_000).matches("adopted the running").count();
        unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
        let status = d.child.wait()?;
        if !status.success() {
            bail!(
                "{node}'s daemon failed on stop ({status}):\n{}",
                tail(&d.log, 20)
            );
        }
        let backend = node.starts_with("be-");
        self.start_daemon(node, backend)?;
        let want = adopted_before + 2; // POP: two interfaces; backend: decap and dsr
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d = self.daemons.last_mut().expect("just started");
            if let Some(status) = d.child.try_wait()? {
                bail!(
                    "{node}'s new daemon exited ({status}):\n{}",
                    tail(&d.log, 20)
                );
            }
            if tail(&d.log, 100_000).matches("adopted the running").count() >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{node}'s new daemon did not adopt its data plane:\n{}",
                    tail(&d.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops every daemon (SIGTERM, then SIGKILL after 10 s); they leave their programs pinned,
    /// which go with the pins and namespaces the lab removes next.
    pub(super) fn stop_daemons(&mut self) {
        for d in &self.daemons {
            unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for d in &mut self.daemons {
            loop {
                match d.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = d.child.kill();
                        let _ = d.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            let _ = std::fs::remove_dir_all(crate::sys::rundir::run_dir(
                &crate::dataplane::node_pin_dir(&self.pin_root, &d.node),
            ));
        }
        self.daemons.clear();
    }
}

/// The last `lines` lines of a file (a daemon's log).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}
