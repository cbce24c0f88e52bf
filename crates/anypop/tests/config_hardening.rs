//! `anypop check` on hostile and meaningless network files, through the real binary: files that
//! are not files (a FIFO, /dev/zero), a 50 MB line, a `src_file` that is someone's secret, names
//! that would become paths, and networks that validate but could not carry a packet. Every run
//! has a deadline: a check that hangs is killed and fails the test.
mod common;

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::TempDir;

/// How long one `check` may take, even on a loaded machine; a hang is a failure.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `anypop check --config FILE` and returns (success, stdout + stderr). Output goes to
/// files, not pipes, so a child that writes a lot cannot block on a full pipe; it is polled
/// until the deadline and killed after it.
fn check(config: &Path) -> (bool, String) {
    check_within(config, DEADLINE)
}

/// Checks that `anypop check` refuses `config` and says `words`; returns what it said.
fn assert_refused(config: &Path, words: &str) -> String {
    let (ok, out) = check(config);
    assert!(!ok, "accepted: {out}");
    assert!(out.contains(words), "no {words:?} in:\n{out}");
    out
}

/// [`check`] with another deadline.
fn check_within(config: &Path, deadline: Duration) -> (bool, String) {
    let out = tempfile_in(config.parent().unwrap_or(Path::new("/tmp")), "out");
    let err = tempfile_in(config.parent().unwrap_or(Path::new("/tmp")), "err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_anypop"))
        .args(["check", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "anypop check --config {} did not finish within {deadline:?}",
                config.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    for f in [&out, &err] {
        let mut bytes = Vec::new();
        std::fs::File::open(f)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&bytes));
        let _ = std::fs::remove_file(f);
    }
    (status.success(), text)
}

fn tempfile_in(dir: &Path, what: &str) -> PathBuf {
    let dir = if dir.as_os_str().is_empty() || dir == Path::new("/dev") {
        std::env::temp_dir()
    } else {
        dir.to_owned()
    };
    dir.join(format!(
        "anypop-check-{what}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ))
}

/// The example network every snippet is appended to (the one `check` is documented with), so
/// the tests need no copy of a network of their own.
fn example() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/example.toml"))
        .unwrap()
}

/// 1-based line of the `nth` line of `text` containing `needle`.
fn line_of(text: &str, needle: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} not in the file"))
        .0
        + 1
}

/// Checks example + `extra` and asserts that it fails with a line
/// `net.toml:LINE: ITEM: FIELD: …WORDS…`, LINE being that of the first line of `extra`
/// containing `needle`.
fn refused(dir: &TempDir, extra: &str, needle: &str, item_field: &str, words: &str) {
    let text = format!("{}{extra}", example());
    let f = dir.write("net.toml", &text);
    let (ok, out) = check(&f);
    assert!(!ok, "accepted:\n{extra}\n{out}");
    let nth = example().lines().filter(|l| l.contains(needle)).count();
    let start = format!("net.toml:{}: {item_field}: ", line_of(&text, needle, nth));
    assert!(
        out.lines().any(|l| l.contains(&start) && l.contains(words)),
        "no line with {start:?} and {words:?} in:\n{out}"
    );
}

#[test]
fn a_fifo_is_refused_at_once() {
    let dir = TempDir::new("fifo");
    let fifo = dir.0.join("net.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert_refused(&fifo, "FIFO (named pipe), not a regular file");
}

#[test]
fn dev_zero_is_refused_without_reading_it() {
    assert_refused(
        Path::new("/dev/zero"),
        "character device, not a regular file",
    );
}

#[test]
fn a_file_over_the_limit_is_refused_unread() {
    let dir = TempDir::new("big");
    // Sparse: 65 MiB on record, nothing on disk.
    let f = dir.0.join("net.toml");
    std::fs::File::create(&f)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    assert_refused(&f, "larger than 64 MiB");
}

#[test]
fn a_50_mb_line_gives_a_short_error() {
    let dir = TempDir::new("long");
    let huge = "A".repeat(50 << 20);
    let (tenth, fifth) = (&huge[..5 << 20], &huge[..20 << 20]);
    // (file, problems it has): each problem is a line of its own, and each line quotes at most
    // two short excerpts, so the error stays under 1 KB per problem found.
    for (text, problems) in [
        // An unknown key: the parser quotes it.
        (format!("{huge} = 1\n"), 1),
        // A 50 MB service on one line whose every value is long: each is quoted back.
        (
            format!(
                "service = [{{ name = \"{tenth}\", vip = \"{tenth}\", protocol = \"{tenth}\", ports = \"{tenth}\", backends = [\"{tenth}\"], weights = {{ \"{tenth}\" = 1 }} }}] # {fifth}\n"
            ),
            5,
        ),
        // Not TOML at all.
        (huge.clone(), 1),
    ] {
        let f = dir.write("net.toml", &text);
        // Parsing 50 MB takes a few seconds in a debug build on a busy machine.
        let (ok, out) = check_within(&f, DEADLINE * 6);
        assert!(!ok);
        assert_eq!(
            out.lines().count(),
            problems,
            "{}",
            &out[..out.len().min(2000)]
        );
        assert!(
            out.lines().all(|l| l.len() < 400) && out.len() < 1024 * problems,
            "a {}-byte error: {}",
            out.len(),
            &out[..out.len().min(2000)]
        );
    }
}

#[test]
fn a_src_file_that_is_a_secret_is_never_printed() {
    let dir = TempDir::new("secret");
    dir.write(
        "shadow",
        "root:$6$saltsalt$Zm9yYmlkZGVuLXNlY3JldC1oYXNo:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n",
    );
    let text = format!(
        "{}\n[[rule]]\nname = \"from-shadow\"\naction = \"deny\"\nsrc_file = \"shadow\"\n",
        example()
    );
    let f = dir.write("net.toml", &text);
    let (ok, out) = check(&f);
    assert!(!ok, "{out}");
    for secret in ["Zm9yYmlkZGVu", "saltsalt", "bin:*"] {
        assert!(!out.contains(secret), "{secret:?} printed:\n{out}");
    }
    assert!(
        out.contains(&format!(
            "net.toml:{}: rule \"from-shadow\": src_file:",
            line_of(&text, "src_file", 0)
        )) && out.contains("shadow:1: not a prefix (the line is not shown"),
        "{out}"
    );
}

#[test]
fn names_that_would_become_paths_are_refused() {
    let dir = TempDir::new("names");
    for (name, why) in [
        ("..", "may not start with '.'"),
        ("/abs", "contains '/'"),
        ("", "is empty"),
        ("bell\\u0007", "contains '\\u{7}'"),
        ("a\\tb", "contains '\\t'"),
    ] {
        let extra = format!(
            "\n[[node]]\nname = \"{name}\"\nrole = \"backend\"\ninterface = \"eth0\"\naddress = \"192.0.2.99\"\n"
        );
        let shown = format!(
            "{:?}",
            name.replace("\\u0007", "\u{7}").replace("\\t", "\t")
        );
        refused(
            &dir,
            &extra,
            &format!("name = \"{name}\""),
            &format!("node {shown}: name"),
            why,
        );
    }
}

/// A service on its own VIP, so a snippet conflicts with nothing in the example.
fn service(vip: &str, more: &str) -> String {
    format!(
        "\n[[service]]\nname = \"extra\"\nvip = \"{vip}\"\nprotocol = \"udp\"\nports = \"7777\"\nbackends = [\"be-fra-1\"]\n{more}"
    )
}

#[test]
fn meaningless_networks_are_refused_naming_the_field() {
    let dir = TempDir::new("meaningless");
    for vip in ["0.0.0.0", "127.0.0.1", "239.1.2.3", "255.255.255.255"] {
        refused(
            &dir,
            &service(vip, ""),
            "vip =",
            "service \"extra\": vip",
            "which players cannot reach",
        );
    }
    let backend = |addr: &str, iface: &str| {
        format!(
            "\n[[node]]\nname = \"be-x\"\nrole = \"backend\"\ninterface = \"{iface}\"\naddress = \"{addr}\"\n"
        )
    };
    refused(
        &dir,
        &backend("0.0.0.0", "eth0"),
        "address =",
        "node \"be-x\": address",
        "unspecified",
    );
    refused(
        &dir,
        &backend("192.0.2.21", "eth0"),
        "address =",
        "node \"be-x\": address",
        "also the address of node \"be-fra-1\"",
    );
    // At a POP's tunnel source, and serving: the POP would tunnel to itself.
    refused(
        &dir,
        &format!(
            "{}{}",
            backend("198.51.100.10", "eth0"),
            service("203.0.113.77", "").replace("be-fra-1", "be-x")
        ),
        "address =",
        "node \"be-x\": address",
        "would tunnel to itself",
    );
    refused(
        &dir,
        &backend("192.0.2.50", "a-very-long-ifname"),
        "interface =",
        "node \"be-x\": interface",
        "is 18 bytes long",
    );
    refused(
        &dir,
        &backend("192.0.2.50", ""),
        "interface =",
        "node \"be-x\": interface",
        "is empty",
    );
    refused(
        &dir,
        "\n[[node]]\nname = \"pop-x\"\nrole = \"pop\"\ninterfaces = [\"eth0\", \"eth0\"]\ntunnel_source = \"0.0.0.0\"\n",
        "interfaces =",
        "node \"pop-x\": interfaces",
        "\"eth0\" is listed twice",
    );
    refused(
        &dir,
        "\n[[node]]\nname = \"pop-x\"\nrole = \"pop\"\ninterfaces = [\"eth0\"]\ntunnel_source = \"0.0.0.0\"\n",
        "tunnel_source =",
        "node \"pop-x\": tunnel_source",
        "unspecified",
    );
    let rule = |body: &str| format!("\n[[rule]]\nname = \"r\"\naction = \"deny\"\n{body}\n");
    for (body, needle, field, words) in [
        (
            "protocol = \"udp\"\ntcp_flags = \"SYN\"",
            "tcp_flags =",
            "tcp_flags",
            "only match udp",
        ),
        (
            "protocol = \"udp\"\nicmp_type = \"8\"",
            "icmp_type =",
            "icmp_type",
            "only match udp",
        ),
        (
            "tcp_flags = \"SYN,!SYN\"",
            "tcp_flags =",
            "tcp_flags",
            "both required and forbidden",
        ),
        ("services = []", "services =", "services", "is empty"),
    ] {
        refused(
            &dir,
            &rule(body),
            needle,
            &format!("rule \"r\": {field}"),
            words,
        );
    }
}

#[test]
fn what_may_be_meant_is_still_accepted() {
    // Every backend drained, a prefix with host bits and a rule its services' protocol rules out
    // are warnings, not refusals: the drained service is how an operator lets running games end,
    // the prefix is read as written, and the rule may be written ahead of its service.
    let dir = TempDir::new("meant");
    let text = format!(
        "{}{}\n[[rule]]\nname = \"hosty\"\naction = \"deny\"\nsrc = [\"10.1.2.3/8\"]\n\n[[rule]]\nname = \"ahead\"\naction = \"deny\"\nservices = [\"rust-eu\"]\nprotocol = \"tcp\"\n",
        example(),
        service("203.0.113.77", "weights = { \"be-fra-1\" = 0 }\n")
    );
    let file = dir.write("net.toml", &text);
    let (ok, out) = check(&file);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: ") && out.contains("10.1.2.3/8"),
        "{out}"
    );
    // Under --strict the same warnings refuse the file.
    let o = Command::new(env!("CARGO_BIN_EXE_anypop"))
        .args(["check", "--strict", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("10.1.2.3/8"), "{t}");
}

/// A `--node` argument becomes part of the pin and run directories' paths: every command that
/// takes one refuses a name that is not a plain name before it touches anything (`..` with
/// `--pin-root /` once made a clean-up remove all of /run).
#[test]
fn node_arguments_that_would_become_paths_are_refused_by_every_command() {
    let dir = TempDir::new("nodeargs");
    let cfg = dir.write("net.toml", &example());
    let pins = dir.0.join("pins");
    let cfg_s = cfg.to_string_lossy().into_owned();
    let pins_s = pins.to_string_lossy().into_owned();
    for node in ["..", "/abs", "", "a/b", "x\u{7}"] {
        for args in [
            vec![
                "run",
                "--config",
                &cfg_s,
                "--pin-root",
                &pins_s,
                "--node",
                node,
            ],
            vec![
                "apply",
                "--config",
                &cfg_s,
                "--pin-root",
                &pins_s,
                "--node",
                node,
            ],
            vec!["down", "--pin-root", &pins_s, "--node", node],
            vec!["status", "--pin-root", &pins_s, "--node", node],
            vec!["check", "--config", &cfg_s, "--node", node],
        ] {
            let o = Command::new(env!("CARGO_BIN_EXE_anypop"))
                .args(&args)
                .output()
                .unwrap();
            let t = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(!o.status.success(), "{args:?}: {t}");
            assert!(t.contains("is not a valid node name"), "{args:?}: {t}");
        }
    }
    assert!(!pins.exists(), "nothing was created under the pin root");
}
