//! The telemetry side against hostile local users and dying processes: the metrics server keeps
//! answering scrapes while idle and trickling clients hold connections; `capture -w` never
//! writes through a planted link and keeps its file private; a capture killed with SIGKILL stops
//! the kernel sampling by itself; `trace` reports a frame it cannot run and the packets before a
//! cut-short record instead of giving up; errors name the path and the fix; `status` escapes
//! names.
mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anypop::{
    compile,
    dataplane::edge::Edge,
    telemetry::{
        capture::{LEASE_SECS, create_output},
        metrics::{Limits, serve, serve_with},
        trace::{Tracer, read_capture},
    },
};
use anypop_common::layout::{CaptureConfig, CaptureRecord};
use aya::maps::{Array, Map, MapData, RingBuf};
use common::*;

// ---------------------------------------------------------------------------------------------
// Metrics server
// ---------------------------------------------------------------------------------------------

/// A raw HTTP exchange: sends `request`, reads until the server closes (or `within` passes).
fn http(addr: SocketAddr, request: &str, within: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn latest(text: &str) -> Arc<Mutex<String>> {
    Arc::new(Mutex::new(text.to_owned()))
}

const BODY: &str = "# HELP anypop_x X.\n# TYPE anypop_x counter\nanypop_x{node=\"pop-1\"} 7\n";

#[test]
fn a_scrape_is_answered_while_idle_and_trickling_clients_hold_connections() {
    let addr = serve("127.0.0.1:0".parse().unwrap(), latest(BODY)).unwrap();
    // Idle clients: connected, silent.
    let idle: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // A slowloris: half a request, then a byte now and then (bounded, it stops by itself).
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..20 {
            if slow.write_all(b"X").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // The server accepts in order: the idle and slow clients are taken before the scrape.
    let t0 = Instant::now();
    let reply = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        Duration::from_secs(3),
    );
    let took = t0.elapsed();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
    assert!(reply.ends_with(BODY), "{reply:?}");
    assert!(
        reply.contains("Content-Type: text/plain; version=0.0.4"),
        "{reply:?}"
    );
    assert!(took < Duration::from_secs(2), "scrape took {took:?}");
    drop(idle);
    trickle.join().unwrap();
}

#[test]
fn only_get_metrics_is_answered() {
    let addr = serve("127.0.0.1:0".parse().unwrap(), latest(BODY)).unwrap();
    let d = Duration::from_secs(3);
    let r = http(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n", d);
    assert!(
        r.starts_with("HTTP/1.1 200 OK") && r.ends_with(BODY),
        "{r:?}"
    );
    let r = http(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", d);
    assert!(
        r.starts_with("HTTP/1.1 200 OK") && !r.contains("anypop_x"),
        "{r:?}"
    );
    for path in ["/", "/metricsx", "/../etc/passwd", "/favicon.ico"] {
        let r = http(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"), d);
        assert!(r.starts_with("HTTP/1.1 404 Not Found"), "{path}: {r:?}");
        assert!(!r.contains("anypop_x"), "{r:?}");
    }
    for method in ["POST", "PUT", "DELETE"] {
        let r = http(
            addr,
            &format!("{method} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            d,
        );
        assert!(
            r.starts_with("HTTP/1.1 405 Method Not Allowed"),
            "{method}: {r:?}"
        );
        assert!(r.contains("Allow: GET, HEAD"), "{r:?}");
    }
    let r = http(addr, "\x16\x03\x01 garbage\r\n\r\n", d);
    assert!(r.starts_with("HTTP/1.1 400"), "{r:?}");
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let r = http(addr, &huge, d);
    assert!(r.starts_with("HTTP/1.1 431"), "{r:?}");
}

#[test]
fn connections_are_bounded_and_a_silent_client_is_cut_off_by_the_read_timeout() {
    let limits = Limits {
        max_connections: 4,
        read_timeout: Duration::from_millis(800),
        write_timeout: Duration::from_secs(2),
    };
    let addr = serve_with("127.0.0.1:0".parse().unwrap(), latest(BODY), limits).unwrap();
    let mut idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // One more is turned away at once, not queued behind them (once the server has taken them
    // all: until then a scrape may still get a free slot and its answer).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let t0 = Instant::now();
        let r = http(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(3),
        );
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
        if r.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
        assert!(Instant::now() < deadline, "never turned away: {r:?}");
    }
    // The silent ones are answered 408 and closed once their time is up…
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    }
    // …and their slots are free again: a scrape goes through (within a deadline).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = http(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(2),
        );
        if r.starts_with("HTTP/1.1 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_taken_metrics_address_is_named_with_the_way_out() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = serve(addr, latest(BODY)).unwrap_err().to_string();
    assert!(e.contains(&addr.to_string()), "{e}");
    assert!(e.contains("in use") && e.contains("--metrics off"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// capture -w
// ---------------------------------------------------------------------------------------------

#[test]
fn the_capture_file_is_new_private_and_never_reached_through_a_link() {
    let d = TempDir::new("out");
    let victim = d.0.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A planted symbolic link: refused, with or without --force; the target untouched.
    let link = d.0.join("cap.pcapng");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for force in [false, true] {
        let e = create_output(&link, force).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }
    // A dangling one too (O_CREAT would have created its target).
    let dangling = d.0.join("dangling.pcapng");
    std::os::unix::fs::symlink(d.0.join("created-by-us"), &dangling).unwrap();
    assert!(create_output(&dangling, false).is_err());
    assert!(!d.0.join("created-by-us").exists());
    // A new file: mode 0600 whatever the umask.
    let old = unsafe { libc::umask(0) };
    let fresh = d.0.join("fresh.pcapng");
    let f = create_output(&fresh, false);
    unsafe { libc::umask(old) };
    drop(f.unwrap());
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // An existing regular file: refused without --force…
    let e = create_output(&fresh, false).unwrap_err().to_string();
    assert!(e.contains("exists") && e.contains("--force"), "{e}");
    // …and with it, replaced by a new file: a hard link to something else is not written into.
    let hard = d.0.join("hard.pcapng");
    std::fs::hard_link(&victim, &hard).unwrap();
    let mut f = create_output(&hard, true).unwrap();
    f.write_all(b"packets").unwrap();
    drop(f);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(std::fs::read(&hard).unwrap(), b"packets");
    let m = std::fs::metadata(&hard).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    assert_ne!(m.ino(), std::fs::metadata(&victim).unwrap().ino());
    // Not a regular file: refused.
    for p in [Path::new("/dev/null"), d.0.as_path()] {
        let e = create_output(p, true).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
    // No temporary files left beside it.
    let left: Vec<_> = std::fs::read_dir(&d.0)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".anypop-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

// ---------------------------------------------------------------------------------------------
// A real POP data plane, pinned where `--pin-root ROOT --node pop-1` finds it.
// ---------------------------------------------------------------------------------------------

fn network() -> String {
    lab_network(include_str!("fixtures/telemetry.toml"))
}

/// A loaded edge (maps pinned in `root/pop-1`), removed on drop.
struct Pop {
    t: TestEdge,
    root: PathBuf,
    dir: PathBuf,
    names: compile::Names,
}

impl Drop for Pop {
    fn drop(&mut self) {
        self.t.edge.take();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Pop {
    fn new(lab: &Lab, tag: &str) -> Pop {
        require_root();
        let root = PathBuf::from(format!(
            "/sys/fs/bpf/anypop-telem-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        let dir = anypop::dataplane::node_pin_dir(&root, "pop-1");
        let t = TestEdge::at(dir.clone(), &network(), lab);
        let names = t.names.clone();
        Pop {
            t,
            root,
            dir,
            names,
        }
    }

    fn edge(&mut self) -> &mut Edge {
        self.t.edge()
    }

    /// What `anypop status` says of pop-1.
    fn status(&self) -> String {
        anypop::telemetry::status::report_named(
            &self.dir,
            "pop-1",
            Duration::from_millis(50),
            &self.names,
        )
        .unwrap()
    }

    fn run(&mut self, frame: &[u8], ifindex: u32) -> u32 {
        anypop::dataplane::testrun::run_xdp(self.edge().program(), frame, Some(ifindex), 1)
            .unwrap()
            .action
    }

    fn capture_request(&self) -> CaptureConfig {
        let m: Array<MapData, CaptureConfig> = Array::try_from(Map::Array(
            MapData::from_pin(self.dir.join("CAPTURE")).unwrap(),
        ))
        .unwrap();
        m.get(&0, 0).unwrap()
    }

    fn ring(&self) -> RingBuf<MapData> {
        RingBuf::try_from(Map::RingBuf(
            MapData::from_pin(self.dir.join("CAPTURE_RING")).unwrap(),
        ))
        .unwrap()
    }
}

/// A frame to a non-VIP address: pass_not_vip, sampled by a capture of every reason.
fn other_traffic() -> Vec<u8> {
    udp4([100, 64, 0, 10], 40000, [10, 9, 9, 9], 53, b"x")
}

/// Records waiting in the ring (drained).
fn drain(ring: &mut RingBuf<MapData>) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        assert!(item.len() >= std::mem::size_of::<CaptureRecord>());
        n += 1;
    }
    n
}

/// A child process killed and reaped however the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_capture_killed_with_sigkill_stops_the_kernel_sampling_by_itself() {
    require_root();
    in_lab(|lab| {
        let mut pop = Pop::new(lab, "kill");
        let out = TempDir::new("kill");
        let file = out.0.join("cap.pcapng");
        let mut child = Reaped(
            std::process::Command::new(env!("CARGO_BIN_EXE_anypop"))
                .args(["capture", "--node", "pop-1", "--count", "1000000"])
                .args(["--duration", "600", "-w"])
                .arg(&file)
                .arg("--pin-root")
                .arg(&pop.root)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        // Sampling on: the request is set and its file exists, private.
        let deadline = Instant::now() + Duration::from_secs(20);
        while pop.capture_request().reasons == 0 {
            assert!(Instant::now() < deadline, "the capture never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let status = pop.status();
        assert!(status.contains("capture: on (every reason"), "{status}");
        // Renewed while alive: the deadline moves forward, a few seconds ahead.
        let first = pop.capture_request().expires;
        let deadline = Instant::now() + Duration::from_secs(4);
        while pop.capture_request().expires <= first {
            assert!(
                Instant::now() < deadline,
                "the deadline never moved from {first}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let now = anypop::telemetry::monotonic_secs();
        let req = pop.capture_request();
        assert!(req.expires > now, "{req:?} at {now}");
        assert!(req.expires <= now + LEASE_SECS + 1, "{req:?} at {now}");
        child.0.kill().unwrap(); // SIGKILL: no guard runs, the request stays set.
        child.0.wait().unwrap();
        let killed = Instant::now();
        assert_ne!(pop.capture_request().reasons, 0, "the request stays behind");
        let mut ring = pop.ring();
        drain(&mut ring);
        // Right after the kill the kernel still samples (the deadline is ahead)…
        pop.run(&other_traffic(), lab.a0);
        assert_eq!(drain(&mut ring), 1, "sampling on until the deadline");
        // …and stops by itself within the lease.
        let stop_by = killed + Duration::from_secs(LEASE_SECS as u64 + 2);
        loop {
            pop.run(&other_traffic(), lab.a0);
            if drain(&mut ring) == 0 {
                break;
            }
            assert!(
                Instant::now() < stop_by,
                "still sampling {:?} after the capture died",
                killed.elapsed()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // For good.
        for _ in 0..20 {
            pop.run(&other_traffic(), lab.a0);
        }
        assert_eq!(drain(&mut ring), 0);
        let status = pop.status();
        assert!(status.contains("capture: stale (every reason"), "{status}");
        // The dead capture's request does not block the next capture, which replaces it and
        // clears it when it ends.
        let stop = std::sync::atomic::AtomicBool::new(false);
        let file2 = out.0.join("second.pcapng");
        std::thread::scope(|s| {
            let sender = s.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(10);
                while pop.capture_request().expires == 0
                    || pop.capture_request().expires <= anypop::telemetry::monotonic_secs()
                {
                    assert!(Instant::now() < deadline, "second capture never started");
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            let n = anypop::telemetry::capture::capture(
                &pop.dir,
                &pop.names,
                &anypop::telemetry::capture::CaptureRequest {
                    reasons: vec![],
                    service: None,
                    count: 1000,
                    duration: Some(Duration::from_millis(1500)),
                    rate: 1000,
                },
                &file2,
                &stop,
                &|_| {},
            )
            .unwrap();
            assert_eq!(n, 0, "no traffic was sent");
            sender.join().unwrap();
        });
        assert_eq!(pop.capture_request(), CaptureConfig::default());
    });
}

// ---------------------------------------------------------------------------------------------
// trace
// ---------------------------------------------------------------------------------------------

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = pcap_file::pcap::PcapWriter::new(file).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            Duration::from_millis(i as u64),
            f.len() as u32,
            f,
        ))
        .unwrap();
    }
}

fn write_pcapng(path: &Path, frames: &[Vec<u8>]) {
    use pcap_file::pcapng::blocks::{
        enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
    };
    let file = std::fs::File::create(path).unwrap();
    let mut w = pcap_file::pcapng::PcapNgWriter::new(file).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: pcap_file::DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    for f in frames {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_secs(1),
            original_len: f.len() as u32,
            data: std::borrow::Cow::Borrowed(f),
            options: vec![],
        })
        .unwrap();
    }
}

/// Cuts the last `n` bytes off a file.
fn cut(path: &Path, n: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - n).unwrap();
}

fn frames() -> Vec<Vec<u8>> {
    vec![
        udp4([100, 64, 0, 10], 40000, [203, 0, 113, 10], 27020, b"tick"),
        vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08], // 13 bytes: no Ethernet header
        other_traffic(),
    ]
}

#[test]
fn a_truncated_last_record_leaves_the_packets_before_it_and_a_warning() {
    let d = TempDir::new("pcap");
    for (name, write) in [
        ("a.pcap", write_pcap as fn(&Path, &[Vec<u8>])),
        ("a.pcapng", write_pcapng),
    ] {
        let p = d.0.join(name);
        write(&p, &frames());
        let whole = read_capture(&p).unwrap();
        assert_eq!(whole.frames, frames(), "{name}");
        assert!(whole.warning.is_none(), "{name}: {:?}", whole.warning);
        cut(&p, 7);
        let c = read_capture(&p).unwrap();
        assert_eq!(c.frames, frames()[..2].to_vec(), "{name}");
        let w = c.warning.unwrap_or_default();
        assert!(
            w.contains("ends inside the record after packet 2") && w.contains(name),
            "{name}: {w}"
        );
    }
}

#[test]
fn trace_refuses_a_fifo_and_a_huge_file_without_waiting_or_reading_them() {
    let d = TempDir::new("fifo");
    let fifo = d.0.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // On a thread: a blocking open of a FIFO with no writer would never return.
    let (tx, rx) = std::sync::mpsc::channel();
    let f = fifo.clone();
    std::thread::spawn(move || tx.send(read_capture(&f).map(|_| ()).unwrap_err().to_string()));
    let e = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("read_capture hung on a FIFO");
    assert!(e.contains("not a regular file"), "{e}");
    let e = read_capture(&d.0).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    // A sparse file past the bound: refused by its size, nothing read.
    let big = d.0.join("big.pcap");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(anypop::telemetry::trace::MAX_PCAP_BYTES + 1)
        .unwrap();
    let t0 = Instant::now();
    let e = read_capture(&big).unwrap_err().to_string();
    assert!(e.contains("at most 1024 MiB"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[test]
fn trace_reports_a_frame_it_cannot_run_and_goes_on() {
    require_root();
    in_lab(|lab| {
        let mut pop = Pop::new(lab, "trace");
        pop.edge().attach("a0", true).unwrap();
        let tracer = Tracer::new(&pop.dir, "a0", pop.names.clone()).unwrap();
        let f = frames();
        let short = tracer.trace(&f[1]).unwrap();
        assert!(short.action.is_none());
        let l = anypop::telemetry::trace::line(2, &short);
        assert!(l.contains("not run: 13 bytes"), "{l}");
        let ok = tracer.trace(&f[2]).unwrap();
        assert_eq!(ok.reason, Some(anypop_common::verdict::Reason::PassNotVip));
        // A jumbo frame larger than a test run takes: a line too, not an abort.
        let mut jumbo = udp4(
            [100, 64, 0, 10],
            40000,
            [203, 0, 113, 10],
            27020,
            &[7u8; 8900],
        );
        jumbo.truncate(9000);
        let j = tracer.trace(&jumbo).unwrap();
        let l = anypop::telemetry::trace::line(3, &j);
        assert!(j.action.is_some() || l.contains("not run"), "{l}");
        // The whole command: every packet gets its line, the cut-short record a warning.
        let d = TempDir::new("trace");
        let p = d.0.join("in.pcap");
        let mut all = f.clone();
        all.push(other_traffic());
        write_pcap(&p, &all);
        cut(&p, 3);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_anypop"))
            .args(["trace", "--node", "pop-1", "--interface", "a0", "--pcap"])
            .arg(&p)
            .arg("--pin-root")
            .arg(&pop.root)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("fwd_ipip"), "{text}");
        assert!(lines[1].contains("not run: 13 bytes"), "{text}");
        assert!(lines[2].contains("pass_not_vip"), "{text}");
        assert!(
            text.contains("ends inside the record after packet 3"),
            "{text}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Pins: not bpffs, not root
// ---------------------------------------------------------------------------------------------

#[test]
fn pins_outside_bpffs_are_named_with_the_mount_to_make() {
    let d = TempDir::new("notbpf");
    // The pin directory itself on tmpfs or ext4, as a mistaken --pin-root makes it.
    let dir = d.0.join("pop-1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("COUNTERS"), "").unwrap();
    let e = anypop::telemetry::status::report(&dir, "pop-1", Duration::from_millis(10))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("{} is not a bpffs mount", dir.display()))
            && e.contains("mount -t bpf bpf /sys/fs/bpf"),
        "{e}"
    );
    let e = Tracer::new(&dir, "lo", Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is not a bpffs mount"), "{e}");
    // A pin root that does not exist, under a directory that is not bpffs.
    let e = anypop::telemetry::status::report(
        &d.0.join("none/pop-1"),
        "pop-1",
        Duration::from_millis(10),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&format!("{} is not a bpffs mount", d.0.display())),
        "{e}"
    );
}

#[test]
fn a_non_root_user_is_told_the_path_and_to_run_as_root() {
    require_root();
    in_lab(|lab| {
        let pop = Pop::new(lab, "nonroot");
        // A copy of the binary that user `nobody` may run.
        let d = TempDir::new("nonroot");
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = d.0.join("anypop");
        std::fs::copy(env!("CARGO_BIN_EXE_anypop"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new(&bin)
            .args(["status", "--node", "pop-1", "--pin-root"])
            .arg(&pop.root)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            text.contains(&pop.dir.display().to_string())
                && text.contains("permission denied")
                && text.contains("run this as root"),
            "{text}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

#[test]
fn status_escapes_the_names_it_prints() {
    require_root();
    in_lab(|lab| {
        let mut pop = Pop::new(lab, "names");
        // Traffic for service 0, so it shows among the top services.
        for _ in 0..3 {
            pop.run(
                &udp4([100, 64, 0, 10], 40000, [203, 0, 113, 10], 27020, b"tick"),
                lab.a0,
            );
        }
        let mut names = pop.names.clone();
        names.services[0] = "game\nfake: line\x1b[2J\u{202e}".into();
        let text = anypop::telemetry::status::report_named(
            &pop.dir,
            "pop\r-1",
            Duration::from_millis(50),
            &names,
        )
        .unwrap();
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{text:?}"
        );
        assert!(!text.lines().any(|l| l.starts_with("fake")), "{text}");
        assert!(
            text.contains("game\\nfake: line\\u{1b}[2J\\u{202e}"),
            "{text}"
        );
        assert!(text.contains("node pop\\r-1"), "{text}");
    });
}
