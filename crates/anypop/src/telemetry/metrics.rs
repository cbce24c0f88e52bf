//! Prometheus text exposition of a node's counters, served on a listen address (default
//! loopback). The text is rendered by the daemon's loop from the kernel maps once a second and
//! handed to a small server, so scrapes never touch the maps themselves.
//!
//! The server expects other local users on the machine, not all of them friendly: every
//! connection has its own thread, a deadline to send its request and one to take the answer,
//! and the number of connections served at once is bounded (beyond it, 503 at once). An idle
//! or trickling client ties up one slot for a few seconds, never the scrapes. Requests are
//! parsed by `httparse`; only `GET /metrics` (and `HEAD`) is answered, one request per
//! connection.
use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
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
            let _ = writeln!(out, "{}{{{l}}} {}", m.name, value(*v));
        }
    }
    out
}

/// A sample value as the text format spells it (`+Inf`, `-Inf`, `NaN`; Rust writes `inf`).
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
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

/// Bounds of the metrics server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has from connecting to the end of its request head.
    pub read_timeout: Duration,
    /// Time a client has to take the whole answer.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 16,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Longest request head read (request line and headers).
const MAX_HEAD: usize = 8 * 1024;

/// Serves the latest rendered text at `/metrics` on `addr` with the default [`Limits`], on
/// threads of its own. Returns the address bound (port 0 picks one).
pub fn serve(addr: SocketAddr, latest: Arc<Mutex<String>>) -> anyhow::Result<SocketAddr> {
    serve_with(addr, latest, Limits::default())
}

/// [`serve`] with explicit limits.
pub fn serve_with(
    addr: SocketAddr,
    latest: Arc<Mutex<String>>,
    limits: Limits,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "the address is in use (another anypop daemon, or another exporter, listens there)"
                    .to_string()
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "no interface of this machine has that address".to_string()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (a port below 1024 needs root)".to_string()
            }
            _ => e.to_string(),
        };
        anyhow::anyhow!(
            "metrics: cannot listen on {addr}: {why}; give --metrics another IP:PORT, or --metrics off"
        )
    })?;
    let local = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || accept_loop(listener, latest, limits, active))?;
    Ok(local)
}

/// Releases a connection slot however its thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(
    listener: TcpListener,
    latest: Arc<Mutex<String>>,
    limits: Limits,
    active: Arc<AtomicUsize>,
) {
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(_) => {
                // Out of descriptors or memory: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            active.fetch_sub(1, Ordering::AcqRel);
            // Never wait on this client: one try to say why, then close.
            let _ = stream.set_nonblocking(true);
            let _ = reject(&stream);
            continue;
        }
        let slot = Slot(Arc::clone(&active));
        let latest = Arc::clone(&latest);
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let _slot = slot;
                handle(stream, &latest, limits);
            });
        // Out of threads: the closure (slot and stream) was dropped, the client sees a close.
        drop(spawned);
    }
}

/// Tells a client beyond the connection bound to come back (non-blocking: one try), then
/// closes.
fn reject(mut s: &TcpStream) -> std::io::Result<()> {
    let mut sink = [0u8; 4096];
    let _ = s.read(&mut sink);
    s.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n",
    )?;
    s.shutdown(Shutdown::Write)
}

/// What the client asked for.
struct Head {
    method: String,
    path: String,
}

/// Reads one request head by `deadline`; the status line to answer instead when it fails.
fn read_head(mut s: &TcpStream, deadline: Instant) -> Result<Head, Option<&'static str>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Some("408 Request Timeout"));
        }
        s.set_read_timeout(Some(left)).map_err(|_| None)?;
        match s.read(&mut chunk) {
            Ok(0) => return Err(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Some("408 Request Timeout"));
            }
            Err(_) => return Err(None),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return Ok(Head {
                    method: req.method.unwrap_or("").to_owned(),
                    path: req.path.unwrap_or("").to_owned(),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {}
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Err(Some("431 Request Header Fields Too Large"));
            }
            Err(_) => return Err(Some("400 Bad Request")),
        }
    }
}

/// One connection: one request, one answer, closed.
fn handle(stream: TcpStream, latest: &Mutex<String>, limits: Limits) {
    let head = read_head(&stream, Instant::now() + limits.read_timeout);
    let write_by = Instant::now() + limits.write_timeout;
    let head = match head {
        Ok(h) => h,
        Err(Some(status)) => {
            let _ = answer(&stream, status, &[], status.as_bytes(), write_by);
            return;
        }
        Err(None) => return,
    };
    let path = head.path.split('?').next().unwrap_or("");
    let get = head.method == "GET";
    if !get && head.method != "HEAD" {
        let _ = answer(
            &stream,
            "405 Method Not Allowed",
            &[("Allow", "GET, HEAD")],
            b"only GET /metrics here\n",
            write_by,
        );
        return;
    }
    if path != "/metrics" {
        let _ = answer(
            &stream,
            "404 Not Found",
            &[],
            b"metrics are at /metrics\n",
            write_by,
        );
        return;
    }
    let body = latest
        .lock()
        .map(|b| b.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let _ = answer_full(
        &stream,
        "200 OK",
        &[("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
        body.as_bytes(),
        get,
        write_by,
    );
}

fn answer(
    s: &TcpStream,
    status: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    deadline: Instant,
) -> std::io::Result<()> {
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "text/plain; charset=utf-8")];
    headers.extend_from_slice(extra);
    answer_full(s, status, &headers, body, true, deadline)
}

/// Writes a whole answer by `deadline` (a client that reads slowly is cut off), then closes.
fn answer_full(
    mut s: &TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    with_body: bool,
    deadline: Instant,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    let _ = write!(
        head,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    if with_body {
        out.extend_from_slice(body);
    }
    let mut sent = 0;
    while sent < out.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        s.set_write_timeout(Some(left))?;
        match s.write(&out[sent..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    linger(s);
    Ok(())
}

/// Takes what the client still sends (a request we did not read whole) for a moment before
/// closing: closing with unread data resets the connection, and the client may lose the answer.
fn linger(mut s: &TcpStream) {
    let until = Instant::now() + Duration::from_millis(200);
    let mut sink = [0u8; 4096];
    let mut taken = 0;
    while taken < 64 * 1024 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match s.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => taken += n,
        }
    }
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
