//! Prometheus text exposition of a node's counters, served on a listen address (default
//! loopback). The text is rendered by the daemon's loop from the kernel maps once a second and
//! handed to a small server thread, so scrapes never touch the maps themselves.
use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
};

use anypop_common::verdict::Reason;

use super::Snapshot;

/// A labelled counter family (rules, services, backends).
pub struct Family<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub label: &'a str,
    pub values: Vec<(String, u64)>,
}

/// A gauge or counter with labels of its own (beyond `node`): state-table fill, attach modes,
/// the program's run-time statistics.
pub struct Metric<'a> {
    pub name: &'a str,
    pub help: &'a str,
    /// "gauge" or "counter".
    pub kind: &'a str,
    /// (label pairs, value).
    pub samples: Vec<(Vec<(&'a str, String)>, f64)>,
}

/// [`Metric`]s in the text format, for node `node` (appended to [`render`]'s text).
pub fn render_metrics(node: &str, metrics: &[Metric<'_>]) -> String {
    let node = esc(node);
    let mut out = String::new();
    for m in metrics {
        if m.samples.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            m.name, m.help, m.name, m.kind
        );
        for (labels, v) in &m.samples {
            let mut l = format!("node=\"{node}\"");
            for (k, val) in labels {
                let _ = write!(l, ",{k}=\"{}\"", esc(val));
            }
            let _ = writeln!(out, "{}{{{l}}} {v}", m.name);
        }
    }
    out
}

/// Label values are quoted strings: escape what the format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every verdict reason (zeros included, so dashboards see the full set), the config version and
/// the labelled families.
pub fn render(
    node: &str,
    verdicts: &Snapshot,
    config_version: u64,
    families: &[Family<'_>],
) -> String {
    let node = esc(node);
    let mut out = String::new();
    for (metric, help, bytes) in [
        ("anypop_packets_total", "Packets by verdict reason.", false),
        ("anypop_bytes_total", "Bytes by verdict reason.", true),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for r in Reason::ALL {
            let c = verdicts.get(r);
            let v = if bytes { c.bytes } else { c.packets };
            let _ = writeln!(
                out,
                "{metric}{{node=\"{node}\",reason=\"{}\"}} {v}",
                r.name()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP anypop_config_version Config switches since the maps were created.\n# TYPE anypop_config_version gauge\nanypop_config_version{{node=\"{node}\"}} {config_version}"
    );
    for f in families {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} counter",
            f.name, f.help, f.name
        );
        for (label, v) in &f.values {
            let _ = writeln!(
                out,
                "{}{{node=\"{node}\",{}=\"{}\"}} {v}",
                f.name,
                f.label,
                esc(label)
            );
        }
    }
    out
}

/// Serves the latest rendered text at any path over HTTP/1.0 on `addr`, on a thread of its own.
pub fn serve(addr: SocketAddr, latest: Arc<Mutex<String>>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!("metrics: cannot listen on {addr}: {e}; pick another --metrics address")
    })?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let body = latest.lock().map(|b| b.clone()).unwrap_or_default();
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anypop_common::layout::Counter;

    #[test]
    fn every_reason_is_exposed_with_labels() {
        let mut s = Snapshot {
            by_reason: vec![Counter::default(); 32],
        };
        s.by_reason[Reason::DropRule as usize] = Counter {
            packets: 7,
            bytes: 420,
        };
        let text = render(
            "pop-1",
            &s,
            3,
            &[Family {
                name: "anypop_rule_hits_total",
                help: "h",
                label: "rule",
                values: vec![("block\"list".into(), 7)],
            }],
        );
        for r in Reason::ALL {
            assert!(text.contains(&format!(
                "anypop_packets_total{{node=\"pop-1\",reason=\"{}\"}}",
                r.name()
            )));
        }
        assert!(text.contains("anypop_packets_total{node=\"pop-1\",reason=\"drop_rule\"} 7"));
        assert!(text.contains("anypop_bytes_total{node=\"pop-1\",reason=\"drop_rule\"} 420"));
        assert!(text.contains("anypop_config_version{node=\"pop-1\"} 3"));
        assert!(text.contains("anypop_rule_hits_total{node=\"pop-1\",rule=\"block\\\"list\"} 7"));
    }
}
