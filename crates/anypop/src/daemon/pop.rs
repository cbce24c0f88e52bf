//! A POP node: the edge program attached to the node's interfaces, its config applied live, and
//! the next-hop probes that keep the kernel's neighbour entries for backends resolved.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail};

use super::explain_other_layouts;
use crate::{
    compile::compile_edge,
    config::{Network, Role},
    dataplane::{
        edge::{AttachMode, Edge, EdgeSizes},
        node_pin_dir,
    },
    sys::iface::{ifindex, mac_of, mtu_of},
    telemetry::Snapshot,
};

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
    /// Next-hop probes that failed (tunnel source not bindable: an address change or a link
    /// flap); each is a warning and a retry, never a reason to stop.
    pub probe_failures: u64,
    /// Whether the last probe failed (so the log says when it works again).
    probe_failing: bool,
    /// Whether the node may fall back to generic XDP (as started: changing it takes a restart).
    allow_generic: bool,
    /// Names behind the live generation's indices (rules, services, backends), for metrics.
    pub names: crate::compile::Names,
    /// The last state-table fill reading (flows, buckets), for metrics: counting walks the LRU,
    /// so it is taken with the fill log line, not per scrape.
    last_fill: Option<(usize, usize)>,
}

/// How often the next hops of backends are re-probed.
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// How soon a failed probe is tried again.
const PROBE_RETRY: Duration = Duration::from_secs(1);

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
        let n = net.node(node)?;
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
        let tables = compile_edge(net, node, standby, edge.sizes.max_services)?;
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
            probe_failures: 0,
            probe_failing: false,
            allow_generic,
            names,
            last_fill: None,
        };
        pop.tick();
        Ok(pop)
    }

    /// Makes a new version of the network file live: validated and compiled first, written into
    /// the standby slot, then switched in one store. Any failure leaves the running config as it
    /// was; state (flows, rate-limit buckets) is kept either way.
    pub fn apply(&mut self, net: &Network) -> anyhow::Result<crate::dataplane::edge::Applied> {
        let n = net.node(&self.node)?;
        if n.role != Role::Pop {
            bail!(
                "node {} is no longer a POP in the new file; restart the daemon to change roles",
                self.node
            );
        }
        let standby = self.edge.standby_generation()?;
        let tables = compile_edge(net, &self.node, standby, self.edge.sizes.max_services)?;
        let applied = self.edge.apply(&tables)?;
        self.names = tables.names.clone();
        self.backends = net.backend_nodes().filter_map(|b| b.address).collect();
        if let Some(ts) = n.tunnel_source {
            self.tunnel_source = ts;
        }
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
                    name: "anypop_probe_failures_total",
                    help: "Next-hop probes that failed (the tunnel source could not be bound); the daemon retries every second.",
                    kind: "counter",
                    samples: vec![(vec![], self.probe_failures as f64)],
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

    /// Periodic housekeeping; call it every few hundred milliseconds. Never fails: a fault of
    /// the network (the tunnel source gone for a moment) is a warning, counted, and retried.
    pub fn tick(&mut self) {
        let due = if self.probe_failing {
            PROBE_RETRY
        } else {
            PROBE_EVERY
        };
        if self.last_probe.is_some_and(|t| t.elapsed() < due) {
            return;
        }
        self.last_probe = Some(Instant::now());
        match probe_next_hops(self.tunnel_source, &self.backends) {
            Ok(()) if self.probe_failing => {
                self.probe_failing = false;
                tracing::info!(
                    "next-hop probes work again (tunnel source {})",
                    self.tunnel_source
                );
            }
            Ok(()) => {}
            Err(e) => {
                self.probe_failures += 1;
                if !self.probe_failing {
                    tracing::warn!(
                        "next-hop probe failed: {e:#}; the data plane keeps running, retrying every {} s",
                        PROBE_RETRY.as_secs()
                    );
                }
                self.probe_failing = true;
            }
        }
    }

    /// What in `net` differs from the running node in ways only a restart makes live (empty:
    /// everything applies live).
    pub fn restart_needed(&self, net: &Network) -> Vec<String> {
        let Ok(n) = net.node(&self.node) else {
            return vec![format!("node {} is no longer in the file", self.node)];
        };
        let mut out = Vec::new();
        if n.role != Role::Pop {
            out.push(format!("node {} is no longer a POP (role)", self.node));
            return out;
        }
        let running: Vec<&str> = self.modes.iter().map(|(i, _)| i.as_str()).collect();
        let wanted: Vec<&str> = n.interfaces.iter().map(String::as_str).collect();
        if wanted != running {
            out.push(format!(
                "interfaces: running on {}, the file says {}",
                running.join(", "),
                wanted.join(", ")
            ));
        }
        if n.xdp_mode_auto(&net.defaults) != self.allow_generic {
            out.push("xdp_mode".to_string());
        }
        if net.defaults.flow_table_size.max(1024) != self.edge.sizes.flow_entries.max(1024) {
            out.push(format!(
                "flow_table_size: {} running, {} in the file",
                self.edge.sizes.flow_entries, net.defaults.flow_table_size
            ));
        }
        if net.defaults.bucket_table_size.max(1024) != self.edge.sizes.bucket_entries.max(1024) {
            out.push(format!(
                "bucket_table_size: {} running, {} in the file",
                self.edge.sizes.bucket_entries, net.defaults.bucket_table_size
            ));
        }
        out
    }

    pub fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        Ok(self.edge.snapshot()?)
    }

    /// Stops the daemon. The attachments are pinned from the moment they exist, so leaving the
    /// data plane running takes nothing; otherwise the pins are removed and the links detached.
    pub fn stop(mut self, leave_running: bool) -> anyhow::Result<()> {
        if leave_running {
            for p in self.edge.link_pins() {
                tracing::info!("left running: link pinned at {}", p.display());
            }
        } else {
            self.edge.detach_all();
            tracing::info!(
                "node {}: detaching XDP from {} interface(s)",
                self.node,
                self.modes.len()
            );
        }
        Ok(())
    }
}
