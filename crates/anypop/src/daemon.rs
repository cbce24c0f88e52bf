//! What `anypop run` does on a node: the glue between the network file and the data plane.
use std::{
    ffi::CString,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail};

use crate::{
    config::{Network, Role, compile::compile_edge},
    dataplane::{
        edge::{AttachMode, Edge, EdgeSizes},
        node_pin_dir,
    },
    telemetry::Snapshot,
};

/// One line describing a network file.
pub fn describe(net: &Network) -> String {
    let pops = net.nodes.iter().filter(|n| n.role == Role::Pop).count();
    let backends = net.nodes.iter().filter(|n| n.role == Role::Backend).count();
    format!(
        "{} services, {} rules, {} profiles, {} nodes ({} pops, {} backends)",
        net.services.len(),
        net.rules.len(),
        net.profiles.len(),
        net.nodes.len(),
        pops,
        backends
    )
}

/// The interface index of `ifname` in this network namespace, or a message saying how to fix it.
pub fn ifindex(ifname: &str, node: &str) -> anyhow::Result<u32> {
    let c = CString::new(ifname)
        .map_err(|_| anyhow!("interface name {ifname:?} contains a NUL byte"))?;
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!(
            "interface {ifname} (node {node}) does not exist on this machine; check `interfaces` of node {node} in the network file against `ip link`"
        );
    }
    Ok(idx)
}

/// Asks the kernel about an interface with an `ifreq` ioctl on a socket, which answers for the
/// calling thread's network namespace (/sys/class/net would answer for the namespace sysfs was
/// mounted in).
fn ifreq_ioctl(ifname: &str, request: libc::c_ulong, what: &str) -> anyhow::Result<libc::ifreq> {
    ifreq_ioctl_with(ifname, request, what, |_| {})
}

/// [`ifreq_ioctl`] with a chance to fill the request first (e.g. `ifru_data` for SIOCETHTOOL).
pub(crate) fn ifreq_ioctl_with(
    ifname: &str,
    request: libc::c_ulong,
    what: &str,
    prepare: impl FnOnce(&mut libc::ifreq),
) -> anyhow::Result<libc::ifreq> {
    if ifname.len() >= libc::IFNAMSIZ {
        bail!("interface name {ifname:?} is too long");
    }
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in ifname.bytes().enumerate() {
        req.ifr_name[i] = b as libc::c_char;
    }
    prepare(&mut req);
    let rc = unsafe { libc::ioctl(fd, request, &mut req) };
    let err = std::io::Error::last_os_error();
    unsafe { libc::close(fd) };
    if rc != 0 {
        bail!("reading the {what} of {ifname}: {err}");
    }
    Ok(req)
}

/// The MAC address of an interface (SIOCGIFHWADDR).
pub fn mac_of(ifname: &str) -> anyhow::Result<[u8; 6]> {
    let req = ifreq_ioctl(ifname, libc::SIOCGIFHWADDR, "MAC address")?;
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (i, m) in mac.iter_mut().enumerate() {
        *m = sa.sa_data[i] as u8;
    }
    Ok(mac)
}

/// The MTU of an interface (SIOCGIFMTU).
pub fn mtu_of(ifname: &str) -> anyhow::Result<u16> {
    let req = ifreq_ioctl(ifname, libc::SIOCGIFMTU, "MTU")?;
    Ok(unsafe { req.ifr_ifru.ifru_mtu }.clamp(0, 65535) as u16)
}

/// bpf_fib_lookup refuses to forward from an interface with IPv4 forwarding off; say so up front
/// instead of dropping every player as `drop_no_route`.
fn check_forwarding(ifname: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding");
    let v = std::fs::read_to_string(&path).unwrap_or_default();
    if v.trim() != "1" {
        bail!(
            "IPv4 forwarding is off on {ifname}: the POP forwards players to backends through the kernel's FIB, which needs it.\nFix: sysctl -w net.ipv4.conf.all.forwarding=1 net.ipv4.conf.{ifname}.forwarding=1"
        );
    }
    Ok(())
}

/// A running POP: the loaded edge program, attached to the node's interfaces.
pub struct Pop {
    pub edge: Edge,
    pub node: String,
    pub modes: Vec<(String, AttachMode)>,
    tunnel_source: Ipv4Addr,
    backends: Vec<Ipv4Addr>,
    last_probe: Option<Instant>,
    /// Names behind the live generation's indices (rules, services, backends), for metrics.
    pub names: crate::config::compile::Names,
    /// The last state-table fill reading (flows, buckets), for metrics: counting walks the LRU,
    /// so it is taken with the fill log line, not per scrape.
    last_fill: Option<(usize, usize)>,
}

/// How often the next hops of backends are re-probed.
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// Makes the kernel resolve (and keep resolved) the MAC of each backend's next hop, so that the
/// XDP program's `bpf_fib_lookup` finds it: XDP traffic itself never refreshes a neighbour entry.
/// The probe is one small UDP datagram from the tunnel source to the backend's discard port (9).
pub fn probe_next_hops(tunnel_source: Ipv4Addr, backends: &[Ipv4Addr]) -> anyhow::Result<()> {
    let sock = UdpSocket::bind(SocketAddrV4::new(tunnel_source, 0)).map_err(|e| {
        anyhow!(
            "cannot bind the tunnel source {tunnel_source}: {e}; tunnel_source must be an address of this machine (`ip addr`)"
        )
    })?;
    for b in backends {
        if let Err(e) = sock.send_to(b"anypop next-hop probe", SocketAddrV4::new(*b, 9)) {
            tracing::warn!(
                "cannot reach backend {b} from {tunnel_source}: {e}; check routing (`ip route get {b}`)"
            );
        }
    }
    Ok(())
}

impl Pop {
    /// Loads, fills and attaches the edge program for `node`. A config that does not validate or
    /// compile fails here, before anything is attached.
    pub fn start_with(net: &Network, node: &str, pin_root: &Path) -> anyhow::Result<Pop> {
        let n = net.node(node).map_err(|e| anyhow!("{e}"))?;
        if n.role != Role::Pop {
            bail!("node {node} is a backend; start it with BackendNode (anypop run does this)");
        }
        let interfaces = n.interfaces.clone();
        let allow_generic = n.xdp_mode_auto(&net.defaults);
        let mut indexes = Vec::new();
        for ifname in &interfaces {
            indexes.push((
                ifname.clone(),
                ifindex(ifname, node)?,
                mac_of(ifname)?,
                mtu_of(ifname)?,
            ));
            check_forwarding(ifname)?;
        }
        // Sized for the most services a file may have, so a reload can add services.
        let sizes = EdgeSizes {
            max_services: anypop_common::layout::MAX_SERVICES,
            flow_entries: net.defaults.flow_table_size,
            bucket_entries: net.defaults.bucket_table_size,
        };
        let pin_dir: PathBuf = node_pin_dir(pin_root, node);
        let mut edge = Edge::load(&pin_dir, sizes)?;
        let standby = edge.standby_generation()?;
        let tables = compile_edge(net, node, standby, edge.sizes.max_services)
            .map_err(|e| anyhow!("{e}"))?;
        let applied = edge.apply(&tables)?;
        let names = tables.names.clone();
        tracing::info!(
            "node {node}: config {:016x} live in slot {} (switch #{})",
            net.source_text_hash,
            applied.generation,
            applied.version
        );
        let mut modes = Vec::new();
        for (_, idx, mac, mtu) in &indexes {
            edge.add_interface(*idx, *mac, *mtu)?;
        }
        for (ifname, _, _, _) in &indexes {
            let mode = edge
                .attach(ifname, allow_generic)
                .map_err(|e| explain_other_layouts(e.into(), pin_root, node))?;
            if mode == AttachMode::Generic {
                tracing::warn!(
                    "interface {ifname}: XDP runs in GENERIC mode (driver has no native XDP): expect a fraction of native speed; see `ethtool -i {ifname}`"
                );
            } else {
                tracing::info!("interface {ifname}: XDP attached in native mode");
            }
            modes.push((ifname.clone(), mode));
        }
        let tunnel_source = n.tunnel_source.expect("validated");
        let backends: Vec<Ipv4Addr> = net.backend_nodes().filter_map(|b| b.address).collect();
        let mut pop = Pop {
            edge,
            node: node.to_owned(),
            modes,
            tunnel_source,
            backends,
            last_probe: None,
            names,
            last_fill: None,
        };
        pop.tick()?;
        Ok(pop)
    }

    /// Makes a new version of the network file live: validated and compiled first, written into
    /// the standby slot, then switched in one store. Any failure leaves the running config as it
    /// was; state (flows, rate-limit buckets) is kept either way.
    pub fn apply(&mut self, net: &Network) -> anyhow::Result<crate::dataplane::edge::Applied> {
        let n = net.node(&self.node).map_err(|e| anyhow!("{e}"))?;
        if n.role != Role::Pop {
            bail!(
                "node {} is no longer a POP in the new file; restart the daemon to change roles",
                self.node
            );
        }
        let running: Vec<&str> = self.modes.iter().map(|(i, _)| i.as_str()).collect();
        if n.interfaces.iter().map(String::as_str).collect::<Vec<_>>() != running {
            tracing::warn!(
                "the new file changes this POP's interfaces; that takes a restart (config applied to the current ones)"
            );
        }
        let standby = self.edge.standby_generation()?;
        let tables = compile_edge(net, &self.node, standby, self.edge.sizes.max_services)
            .map_err(|e| anyhow!("{e}"))?;
        let applied = self.edge.apply(&tables)?;
        self.names = tables.names.clone();
        self.backends = net.backend_nodes().filter_map(|b| b.address).collect();
        self.last_probe = None;
        Ok(applied)
    }

    /// All counters in the Prometheus text format (see [`crate::telemetry::metrics`]).
    pub fn metrics(&mut self) -> anyhow::Result<String> {
        use crate::telemetry::metrics::{Family, render};
        let control = self.edge.control()?;
        let generation = control.active_gen as usize;
        let verdicts = self.edge.snapshot()?;
        let rules = self.edge.counters("RULE_HITS")?;
        let services = self.edge.counters("SVC_HITS")?;
        let backends = self.edge.counters("BE_HITS")?;
        let ms = self.edge.sizes.max_services as usize;
        let extra = self.extra_metrics()?;
        let pick = |all: &[anypop_common::layout::Counter],
                    base: usize,
                    names: &[String]|
         -> Vec<(String, u64)> {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), all.get(base + i).map(|c| c.packets).unwrap_or(0)))
                .collect()
        };
        Ok(render(
            &self.node,
            &verdicts,
            control.version as u64,
            &[
                Family {
                    name: "anypop_rule_hits_total",
                    help: "Packets that matched each rule (first match), live config.",
                    label: "rule",
                    values: pick(
                        &rules,
                        generation * anypop_common::layout::MAX_RULES_TOTAL as usize,
                        &self.names.rules,
                    ),
                },
                Family {
                    name: "anypop_service_packets_total",
                    help: "Packets addressed to each service, live config.",
                    label: "service",
                    values: pick(&services, generation * ms, &self.names.services),
                },
                Family {
                    name: "anypop_backend_packets_total",
                    help: "Packets forwarded to each backend, live config.",
                    label: "backend",
                    values: pick(
                        &backends,
                        generation * anypop_common::layout::MAX_BACKENDS as usize,
                        &self.names.backends,
                    ),
                },
            ],
        ) + &extra)
    }

    /// Gauges beside the counters: attach mode per interface, state-table fill (last reading),
    /// and the program's run-time statistics (they advance only while statistics are enabled:
    /// `sysctl kernel.bpf_stats_enabled=1`, or while `anypop status` measures).
    fn extra_metrics(&mut self) -> anyhow::Result<String> {
        use crate::telemetry::metrics::{Metric, render_metrics};
        let (run_ns, runs) = self.edge.cost()?;
        let mut fill = Vec::new();
        let mut capacity = Vec::new();
        if let Some((f, b)) = self.last_fill {
            fill = vec![
                (vec![("table", "flows".to_string())], f as f64),
                (vec![("table", "buckets".to_string())], b as f64),
            ];
            capacity = vec![
                (
                    vec![("table", "flows".to_string())],
                    self.edge.sizes.flow_entries as f64,
                ),
                (
                    vec![("table", "buckets".to_string())],
                    self.edge.sizes.bucket_entries as f64,
                ),
            ];
        }
        Ok(render_metrics(
            &self.node,
            &[
                Metric {
                    name: "anypop_xdp_attached",
                    help: "1 per interface the edge runs on, labelled with its XDP mode (generic is a problem).",
                    kind: "gauge",
                    samples: self
                        .modes
                        .iter()
                        .map(|(i, m)| {
                            (vec![("interface", i.clone()), ("mode", m.to_string())], 1.0)
                        })
                        .collect(),
                },
                Metric {
                    name: "anypop_state_entries",
                    help: "Entries in a state table at the last reading (taken every minute).",
                    kind: "gauge",
                    samples: fill,
                },
                Metric {
                    name: "anypop_state_capacity",
                    help: "Capacity of a state table (LRU: full tables evict).",
                    kind: "gauge",
                    samples: capacity,
                },
                Metric {
                    name: "anypop_program_runs_total",
                    help: "Runs of the edge program counted by the kernel's run-time statistics.",
                    kind: "counter",
                    samples: vec![(vec![], runs as f64)],
                },
                Metric {
                    name: "anypop_program_run_seconds_total",
                    help: "CPU time in the edge program by the kernel's run-time statistics (divide by runs: cost per packet).",
                    kind: "counter",
                    samples: vec![(vec![], run_ns as f64 / 1e9)],
                },
            ],
        ))
    }

    /// Fill levels of the state tables, as one log line; a warning when one is nearly full
    /// (an LRU that is full evicts: players' flows and rate-limit buckets start to churn).
    pub fn fill_line(&mut self) -> anyhow::Result<String> {
        let (flows, buckets) = self.edge.state_fill()?;
        self.last_fill = Some((flows, buckets));
        let (fsize, bsize) = (
            self.edge.sizes.flow_entries as f64,
            self.edge.sizes.bucket_entries as f64,
        );
        let (fp, bp) = (100.0 * flows as f64 / fsize, 100.0 * buckets as f64 / bsize);
        if fp > 90.0 || bp > 90.0 {
            tracing::warn!(
                "state tables nearly full (flows {fp:.0}%, buckets {bp:.0}%): raise flow_table_size / bucket_table_size in [defaults]"
            );
        }
        Ok(format!(
            "state: flows {flows} ({fp:.1}% of {fsize}), rate-limit buckets {buckets} ({bp:.1}% of {bsize})"
        ))
    }

    /// Periodic housekeeping; call it every few hundred milliseconds.
    pub fn tick(&mut self) -> anyhow::Result<()> {
        if self.last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY) {
            probe_next_hops(self.tunnel_source, &self.backends)?;
            self.last_probe = Some(Instant::now());
        }
        Ok(())
    }

    pub fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        Ok(self.edge.snapshot()?)
    }

    /// Stops the daemon: detaches (dropping the program detaches its links) unless asked to
    /// leave the data plane running, in which case the attachments are pinned first.
    pub fn stop(mut self, leave_running: bool) -> anyhow::Result<()> {
        if leave_running {
            let pins = self.edge.pin_links()?;
            for p in pins {
                tracing::info!("left running: link pinned at {}", p.display());
            }
        } else {
            self.edge.unpin_links();
            tracing::info!(
                "node {}: detaching XDP from {} interface(s)",
                self.node,
                self.modes.len()
            );
        }
        Ok(())
    }
}

/// A running backend: `decap` and `dsr` attached to its interface, its VIPs on `lo`.
pub struct BackendNode {
    pub plane: crate::dataplane::backend::BackendPlane,
    pub node: String,
    pub mode: AttachMode,
    /// VIPs this process added to `lo` (removed again on stop).
    added_vips: Vec<Ipv4Addr>,
}

impl BackendNode {
    /// Loads and attaches the backend programs for `node`, and makes sure game servers can bind
    /// the VIPs (each is added to `lo` as a /32 unless already there).
    pub fn start_with(net: &Network, node: &str, pin_root: &Path) -> anyhow::Result<BackendNode> {
        let n = net.node(node).map_err(|e| anyhow!("{e}"))?;
        let tables =
            crate::config::compile::compile_backend(net, node).map_err(|e| anyhow!("{e}"))?;
        let ifname = n.interfaces.first().cloned().unwrap_or_default();
        ifindex(&ifname, node)?;
        let fwd = std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding"))
            .unwrap_or_default();
        if fwd.trim() != "1" {
            tracing::warn!(
                "IPv4 forwarding is off on {ifname}: the DSR program cannot ask the FIB for next hops, replies take the kernel's route (counted as dsr_fib_fail). Fix: sysctl -w net.ipv4.conf.{ifname}.forwarding=1"
            );
        }
        let mut plane =
            crate::dataplane::backend::BackendPlane::load(&node_pin_dir(pin_root, node))?;
        plane.apply(&tables)?;
        let mut added_vips = Vec::new();
        for vip in &tables.vips {
            let out = std::process::Command::new("ip")
                .args(["addr", "add", &format!("{vip}/32"), "dev", "lo"])
                .output()
                .map_err(|e| anyhow!("running ip: {e}"))?;
            if out.status.success() {
                added_vips.push(*vip);
                tracing::info!("VIP {vip} added to lo: game servers can bind it");
            } else if !{
                // "File exists" or "Address already assigned", depending on iproute2's version.
                let err = String::from_utf8_lossy(&out.stderr);
                err.contains("exists") || err.contains("already assigned")
            } {
                bail!(
                    "cannot add VIP {vip} to lo: {}; add it by hand: ip addr add {vip}/32 dev lo",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let mode = plane
            .attach(&ifname, n.xdp_mode_auto(&net.defaults))
            .map_err(|e| explain_other_layouts(e.into(), pin_root, node))?;
        tracing::info!("interface {ifname}: decap attached ({mode} XDP), dsr on TC egress");
        Ok(BackendNode {
            plane,
            node: node.to_owned(),
            mode,
            added_vips,
        })
    }

    pub fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        Ok(self.plane.snapshot()?)
    }

    /// Applies a new version of the network file (services, allowed POPs). VIPs newly served are
    /// added to `lo`; a failure leaves the running tables as they were.
    pub fn apply(&mut self, net: &Network) -> anyhow::Result<()> {
        let tables =
            crate::config::compile::compile_backend(net, &self.node).map_err(|e| anyhow!("{e}"))?;
        self.plane.apply(&tables)?;
        Ok(())
    }

    /// Stops the daemon. `leave_running`: pin both attachments (the data plane and the VIPs on
    /// `lo` stay for the game servers); otherwise detach and remove the VIPs this process added.
    pub fn stop(self, leave_running: bool) -> anyhow::Result<()> {
        let BackendNode {
            mut plane,
            node,
            added_vips,
            ..
        } = self;
        if leave_running {
            for p in plane.pin_links()? {
                tracing::info!("left running: link pinned at {}", p.display());
            }
            return Ok(());
        }
        plane.unpin_links();
        drop(plane);
        for vip in added_vips {
            let _ = std::process::Command::new("ip")
                .args(["addr", "del", &format!("{vip}/32"), "dev", "lo"])
                .output();
        }
        tracing::info!("node {node}: backend programs detached");
        Ok(())
    }
}

/// The runtime directory of the daemon that owns `pin_dir` (bpffs holds only BPF objects, so the
/// lock, pid and apply hand-over files live under /run, named after the pin directory).
pub fn run_dir(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    PathBuf::from("/run/anypop").join(name)
}

/// One daemon per node: an exclusive `flock` on `daemon.pid` in its [`run_dir`], held for the
/// life of the process (the kernel releases it however the process ends: no stale lock).
pub struct DaemonLock {
    _file: std::fs::File,
    dir: PathBuf,
}

impl Drop for DaemonLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl DaemonLock {
    pub fn acquire(pin_dir: &Path, node: &str) -> anyhow::Result<DaemonLock> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let dir = run_dir(pin_dir);
        std::fs::create_dir_all(&dir).map_err(|e| anyhow!("creating {}: {e}", dir.display()))?;
        let path = dir.join("daemon.pid");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow!("opening {}: {e}", path.display()))?;
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            bail!(
                "another anypop daemon (pid {}) already runs node {node}; stop it first (two daemons for one node would fight over its maps)",
                pid.trim()
            );
        }
        f.set_len(0)?;
        f.rewind()?;
        write!(f, "{}", std::process::id())?;
        Ok(DaemonLock { _file: f, dir })
    }

    /// The network file a pending `anypop apply` asked for, if any (consumed).
    pub fn take_apply_request(&self) -> Option<PathBuf> {
        let p = self.dir.join("apply.request");
        let s = std::fs::read_to_string(&p).ok()?;
        let _ = std::fs::remove_file(&p);
        Some(PathBuf::from(s.trim()))
    }

    /// Records the outcome of an apply for `anypop apply` to report.
    pub fn report(&self, outcome: &str) {
        let tmp = self.dir.join("apply.result.tmp");
        if std::fs::write(&tmp, outcome).is_ok() {
            let _ = std::fs::rename(&tmp, self.dir.join("apply.result"));
        }
    }
}

/// `anypop apply`: asks the daemon of a node (found through its lock file) to apply `config`, and
/// waits for its answer. The file is validated here first, so a bad one never reaches the daemon.
pub fn request_apply(pin_dir: &Path, node: &str, config: &Path) -> anyhow::Result<String> {
    use std::os::fd::AsRawFd;
    let dir = run_dir(pin_dir);
    let lock = dir.join("daemon.pid");
    let f = std::fs::File::open(&lock).map_err(|_| {
        anyhow!(
            "no anypop daemon runs node {node} here ({} not found); start it with anypop run",
            lock.display()
        )
    })?;
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        bail!("no anypop daemon runs node {node} (its lock is free); start it with anypop run");
    }
    let pid: i32 = std::fs::read_to_string(&lock)?
        .trim()
        .parse()
        .map_err(|_| anyhow!("{} holds no pid", lock.display()))?;
    let abs = std::fs::canonicalize(config).map_err(|e| anyhow!("{}: {e}", config.display()))?;
    let result = dir.join("apply.result");
    let _ = std::fs::remove_file(&result);
    std::fs::write(dir.join("apply.request"), abs.to_string_lossy().as_bytes())?;
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        bail!(
            "cannot signal the daemon (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(&result) {
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the daemon (pid {pid}) did not answer within 30 s; see its log")
}

/// Notices when the network file changes on disk (modification time or size), so the daemon
/// applies an edited file without a SIGHUP. Checked about once a second.
pub struct FileWatch {
    path: PathBuf,
    seen: Option<(std::time::SystemTime, u64)>,
    last_check: Instant,
}

impl FileWatch {
    pub fn new(path: &Path) -> FileWatch {
        let mut w = FileWatch {
            path: path.to_owned(),
            seen: None,
            last_check: Instant::now(),
        };
        w.seen = w.stamp();
        w
    }

    fn stamp(&self) -> Option<(std::time::SystemTime, u64)> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    /// Takes the file as it is now as seen (after a reload for another reason).
    pub fn mark_seen(&mut self) {
        self.seen = self.stamp();
    }

    /// True once per change (a file that vanished counts when it comes back).
    pub fn changed(&mut self) -> bool {
        if self.last_check.elapsed() < Duration::from_secs(1) {
            return false;
        }
        self.last_check = Instant::now();
        let now = self.stamp();
        if now.is_some() && now != self.seen {
            self.seen = now;
            return true;
        }
        false
    }
}

/// Pin directories of this node under other layout versions next to `pin_root` (`…/v1/<node>`
/// beside `…/v2`): a data plane of an incompatible anypop may still run from them.
fn other_layouts(pin_root: &Path, node: &str) -> Vec<PathBuf> {
    let (Some(parent), Some(ours)) = (pin_root.parent(), pin_root.file_name()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let n = name.to_string_lossy();
            name != ours
                && n.strip_prefix('v')
                    .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|e| e.path().join(node))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
}

/// An attach failure, with what to do when another layout version's pins explain it.
fn explain_other_layouts(e: anyhow::Error, pin_root: &Path, node: &str) -> anyhow::Error {
    let others = other_layouts(pin_root, node);
    if others.is_empty() {
        return e;
    }
    let list: Vec<String> = others.iter().map(|p| p.display().to_string()).collect();
    anyhow!(
        "{e:#}\nPins of node {node} with another layout version exist: {}. A data plane of an incompatible anypop version probably still runs here; this version does not touch it. Stop it with that version (anypop run --detach), or remove those pins and detach its programs (ip link set dev IF xdp off)",
        list.join(", ")
    )
}
