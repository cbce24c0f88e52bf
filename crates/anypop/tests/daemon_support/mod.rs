//! Shared by the tests that run `anypop run` as an operator does: a daemon child whose output is
//! collected as it comes, so a test waits for what the daemon says ("ready: …") with a deadline
//! instead of sleeping; a unique pin root and temp dir removed however the test ends. (Their
//! network files and namespace are `common::pop_network`, `common::backend_network` and
//! `common::t0_netns`.)
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub fn anypop() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anypop"))
}

/// How long a daemon may take to become ready (loading the edge takes a few seconds; CI is a
/// busy 2-core machine).
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// A running `anypop` child with its stdout and stderr collected line by line.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Daemon {
    pub fn spawn(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn anypop");
        let log = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let log = Arc::clone(&log);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            }));
        }
        Daemon {
            child,
            log,
            readers,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the output contains `needle` (panics with the log if the daemon exits first
    /// or `within` passes).
    pub fn wait_for(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the readers drain what the process wrote last.
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                if self.log().contains(needle) {
                    return;
                }
                panic!(
                    "anypop exited ({status}) before saying {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "anypop did not say {needle:?} within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the `n`-th occurrence of `needle`.
    pub fn wait_for_count(&mut self, needle: &str, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.log().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "anypop did not say {needle:?} {n} times within {within:?}:\n{}",
                self.log()
            );
            assert!(
                self.child.try_wait().ok().flatten().is_none(),
                "anypop exited before saying {needle:?} {n} times:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Stops the daemon as its service manager does (SIGTERM) and waits up to 30 s for it to
    /// end; its exit status and everything it said.
    pub fn stop(self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        self.finish(Duration::from_secs(30))
    }

    /// Waits for the process to end (at most `within`, then kills it and panics).
    pub fn finish(mut self, within: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("anypop did not end within {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (status, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A test's scratch: a temp dir and a pin root, both unique, removed however the test ends.
pub struct Scratch {
    pub dir: PathBuf,
    pub pins: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let id = crate::common::unique(tag);
        let dir = std::env::temp_dir().join(format!("anypop-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch {
            dir,
            pins: PathBuf::from(format!("/sys/fs/bpf/anypop-{id}")),
        }
    }

    /// Writes `text` as `name` in the temp dir.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `anypop run` of `node` with file `cfg`, this pin root and no metrics listener.
    pub fn run_cmd(&self, node: &str, cfg: &Path, extra: &[&str]) -> Command {
        let mut c = anypop();
        c.args(["run", "--node", node, "--interval", "1", "--metrics", "off"])
            .arg("--config")
            .arg(cfg)
            .arg("--pin-root")
            .arg(&self.pins)
            .args(extra);
        c
    }

    /// Writes `network` as `net.toml` and starts `anypop run` of `node` on it ([`Scratch::run_cmd`]
    /// with `extra`); returns the file and the daemon once it says it is ready.
    pub fn start(&self, node: &str, network: &str, extra: &[&str]) -> (PathBuf, Daemon) {
        let cfg = self.file("net.toml", network);
        let mut d = Daemon::spawn(self.run_cmd(node, &cfg, extra));
        d.wait_for(&format!("ready: node {node}"), READY_WITHIN);
        (cfg, d)
    }

    /// Another anypop command for `node` with this pin root.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = anypop();
        c.args(args).arg("--pin-root").arg(&self.pins);
        c
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.pins);
        // The run directories of this pin root's nodes (a killed daemon leaves its own).
        let prefix = anypop::sys::rundir::run_dir(&self.pins.join("x"));
        let prefix = prefix.to_string_lossy();
        let prefix = prefix.trim_end_matches('x');
        if let Ok(entries) = std::fs::read_dir("/run/anypop") {
            for e in entries.flatten() {
                if e.path().to_string_lossy().starts_with(prefix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// Text of a finished command's stdout and stderr.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Checks that a finished command's output (stdout and stderr) says `words`.
pub fn assert_says(o: &std::process::Output, words: &str) {
    let t = output_text(o);
    assert!(t.contains(words), "no {words:?} in:\n{t}");
}

/// What `ip -d link show IF` says (tests may read it; the product never does).
pub fn ip_link(ifname: &str) -> String {
    let o = Command::new("ip")
        .args(["-d", "link", "show", ifname])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}
