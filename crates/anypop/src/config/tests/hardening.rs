//! Hostile and meaningless input: names that would become paths, values that would flood a
//! terminal, files that are not prefix lists, networks that validate but cannot carry a packet.
//! Each refusal is checked for its location (line, item, field), as the rest of the file is.
use std::path::{Path, PathBuf};

use super::{assert_problem, err, line_of, text, udp_service};
use crate::config::{MAX_SHOWN_PROBLEMS, Network, names::NAME_RULE, parse, sample};

fn ok(extra: &str) -> Network {
    parse(&text(extra), "net.toml", Path::new("."))
        .unwrap_or_else(|e| panic!("expected a valid file, got:\n{e}"))
}

/// A scratch directory of its own for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("anypop-hard-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node(name: &str) -> String {
    format!(
        "\n[[node]]\nname = \"{name}\"\nrole = \"backend\"\ninterface = \"eth0\"\naddress = \"192.0.2.77\"\n"
    )
}

#[test]
fn names_that_would_become_paths_are_refused() {
    for (name, why) in [
        ("..", "may not start with '.' or '-'"),
        (".", "may not start with '.' or '-'"),
        ("/abs", "contains '/'"),
        ("", "is empty"),
        ("a\\u0001b", "contains '\\u{1}'"),
        ("-rf", "may not start with '.' or '-'"),
        ("new\\nline", "contains '\\n'"),
    ] {
        let extra = node(name);
        let e = err(&extra);
        let l = line_of(&extra, "name =", 2);
        let shown = format!(
            "{:?}",
            name.replace("\\u0001", "\u{1}").replace("\\n", "\n")
        );
        assert_problem(&e, l, &format!("node {shown}: name:"), why);
        assert!(e.contains(NAME_RULE), "{e}");
    }
    let extra = format!(
        "{}\n[[profile]]\nname = \"p q\"\npps = 10\n\n[[rule]]\nname = \".x\"\naction = \"deny\"\n",
        udp_service("a/b", "1")
    );
    let e = err(&extra);
    assert_problem(
        &e,
        line_of(&extra, "name = \"a/b\"", 0),
        "service \"a/b\": name:",
        "contains '/'",
    );
    assert_problem(
        &e,
        line_of(&extra, "name = \"p q\"", 0),
        "profile \"p q\": name:",
        "contains a space",
    );
    assert_problem(
        &e,
        line_of(&extra, "name = \".x\"", 0),
        "rule \".x\": name:",
        "may not start",
    );
    let long = "n".repeat(64);
    assert_problem(
        &err(&node(&long)),
        line_of(&node(&long), "name =", 2),
        "node",
        "is 64 characters long; at most 63",
    );
}

#[test]
fn interface_names_are_checked_as_the_kernel_would() {
    let extra = "\n[[node]]\nname = \"pop-2\"\nrole = \"pop\"\ninterfaces = [\"eth1\", \"eth1\", \"\", \"far-too-long-name\", \"a/b\", \"eth0:1\", \"..\"]\ntunnel_source = \"198.51.100.2\"\n\n[[node]]\nname = \"be-2\"\nrole = \"backend\"\ninterface = \"bad name\"\naddress = \"192.0.2.22\"\n";
    let e = err(extra);
    let l = line_of(extra, "interfaces =", 1);
    let p = "node \"pop-2\": interfaces:";
    assert_problem(&e, l, p, "\"eth1\" is listed twice");
    assert_problem(&e, l, p, "\"\" is empty");
    assert_problem(
        &e,
        l,
        p,
        "\"far-too-long-name\" is 17 bytes long; Linux interface names are 1-15 bytes",
    );
    assert_problem(&e, l, p, "\"a/b\" contains '/'");
    assert_problem(&e, l, p, "\"eth0:1\" contains ':'");
    assert_problem(&e, l, p, "\"..\" is not an interface name");
    assert_problem(
        &e,
        line_of(extra, "interface = \"bad name\"", 0),
        "node \"be-2\": interface:",
        "contains a space",
    );
    assert_eq!(e.lines().count(), 7, "{e}");
}

#[test]
fn vips_players_cannot_reach_are_refused() {
    for vip in [
        "0.0.0.0",
        "127.0.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "ff02::1",
    ] {
        let extra = sample::service("g", vip, "udp")
            .str("ports", "1")
            .list("backends", &["be-1"])
            .to_string();
        let e = err(&extra);
        assert_problem(
            &e,
            line_of(&extra, "vip =", 0),
            "service \"g\": vip:",
            "which players cannot reach",
        );
    }
}

#[test]
fn node_addresses_must_be_unicast_and_their_own() {
    let extra = "\n[[node]]\nname = \"pop-2\"\nrole = \"pop\"\ninterfaces = [\"eth0\"]\ntunnel_source = \"0.0.0.0\"\n\n[[node]]\nname = \"be-2\"\nrole = \"backend\"\ninterface = \"eth0\"\naddress = \"224.0.0.5\"\n\n[[node]]\nname = \"be-3\"\nrole = \"backend\"\ninterface = \"eth0\"\naddress = \"192.0.2.21\"\n\n[[node]]\nname = \"pop-3\"\nrole = \"pop\"\ninterfaces = [\"eth0\"]\ntunnel_source = \"198.51.100.1\"\n";
    let e = err(extra);
    assert_problem(
        &e,
        line_of(extra, "0.0.0.0", 0),
        "node \"pop-2\": tunnel_source:",
        "unspecified address",
    );
    assert_problem(
        &e,
        line_of(extra, "224.0.0.5", 0),
        "node \"be-2\": address:",
        "multicast",
    );
    assert_problem(
        &e,
        line_of(extra, "address = \"192.0.2.21\"", 1),
        "node \"be-3\": address:",
        &format!(
            "also the address of node \"be-1\" (line {}); each backend needs its own address",
            line_of("", "address = \"192.0.2.21\"", 0)
        ),
    );
    assert_problem(
        &e,
        line_of(extra, "tunnel_source = \"198.51.100.1\"", 1),
        "node \"pop-3\": tunnel_source:",
        &format!(
            "also the tunnel_source of node \"pop-1\" (line {}); each POP needs its own",
            line_of("", "tunnel_source", 0)
        ),
    );
    assert_eq!(e.lines().count(), 4, "{e}");
}

#[test]
fn a_backend_at_a_pops_tunnel_source_is_refused_only_when_it_serves() {
    let be = &sample::backend("be-9", "t0", "198.51.100.1").to_string();
    // Unused (a test that runs both nodes on one host): valid, with a warning.
    let net = ok(be);
    let w = net.warning_lines();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(&format!(
            "net.toml:{}: node \"be-9\": address:",
            line_of(be, "address = \"198.51.100.1\"", 0)
        )) && w[0].contains("would tunnel to itself"),
        "{w:?}"
    );
    let served = format!(
        "{be}{}",
        sample::service("g", sample::VIP, "udp")
            .str("ports", "1")
            .list("backends", &["be-9"])
    );
    let e = err(&served);
    assert_problem(
        &e,
        line_of(&served, "address = \"198.51.100.1\"", 0),
        "node \"be-9\": address:",
        "give backend \"be-9\" its own address",
    );
}

#[test]
fn a_fully_drained_service_is_a_warning() {
    let extra = &sample::udp_service("g", "1")
        .val("weights", "{ \"be-1\" = 0 }")
        .to_string();
    let net = ok(extra);
    assert_eq!(
        net.warning_lines(),
        vec![format!(
            "net.toml:{}: service \"g\": weights: every backend has weight 0: running flows stay, new players are dropped; give a backend a weight above 0 to take players again",
            line_of(extra, "weights", 0)
        )]
    );
    assert!(net.strict().is_err());
}

#[test]
fn rule_conditions_that_cannot_match_are_refused() {
    let extra = sample::network(&[
        sample::udp_service("game", "1"),
        sample::rule("flags-on-udp", "deny")
            .str("protocol", "udp")
            .str("tcp_flags", "SYN"),
        sample::rule("type-on-udp", "deny")
            .str("protocol", "udp")
            .str("icmp_type", "8"),
        sample::rule("syn-not-syn", "deny").str("tcp_flags", "SYN,!SYN"),
        sample::rule("no-services", "deny").val("services", "[]"),
        sample::rule("ports-on-icmp", "deny")
            .str("protocol", "icmp")
            .str("dst_ports", "53"),
    ]);
    let e = err(&extra);
    let at = |needle: &str, nth: usize| line_of(&extra, needle, nth);
    assert_problem(
        &e,
        at("tcp_flags = \"SYN\"", 0),
        "rule \"flags-on-udp\": tcp_flags:",
        "this rule can only match udp packets",
    );
    assert_problem(
        &e,
        at("icmp_type", 0),
        "rule \"type-on-udp\": icmp_type:",
        "ICMP types are only in ICMP packets",
    );
    assert_problem(
        &e,
        at("SYN,!SYN", 0),
        "rule \"syn-not-syn\": tcp_flags:",
        "SYN is both required and forbidden",
    );
    assert_problem(
        &e,
        at("services = []", 0),
        "rule \"no-services\": services:",
        "remove `services` to apply it to every service",
    );
    assert_problem(
        &e,
        at("dst_ports = \"53\"", 0),
        "rule \"ports-on-icmp\": dst_ports:",
        "ICMP packets have no ports",
    );
    assert_eq!(e.lines().count(), 5, "{e}");
}

#[test]
fn rules_their_services_cannot_match_are_warnings() {
    // A rule may be written ahead of the service it is meant for, so what only its services'
    // protocols rule out is a warning.
    let extra = sample::network(&[
        sample::udp_service("game", "1"),
        sample::rule("tcp-on-a-udp-service", "deny")
            .list("services", &["game"])
            .str("protocol", "tcp"),
        sample::rule("flags-on-a-udp-service", "deny")
            .list("services", &["game"])
            .str("tcp_flags", "ACK"),
    ]);
    let w = ok(&extra).warning_lines();
    assert_eq!(
        w,
        vec![
            format!(
                "net.toml:{}: rule \"tcp-on-a-udp-service\": protocol: none of its services carries tcp, so the rule never matches; change `protocol` or `services`",
                line_of(&extra, "protocol = \"tcp\"", 0)
            ),
            format!(
                "net.toml:{}: rule \"flags-on-a-udp-service\": tcp_flags: TCP flags are only in TCP packets, and this rule can only match udp packets (its services carry no other); remove tcp_flags or make the rule match tcp",
                line_of(&extra, "tcp_flags", 0)
            ),
        ]
    );
}

#[test]
fn prefixes_with_host_bits_are_warnings() {
    let dir = Scratch::new("hostbits");
    std::fs::write(
        dir.0.join("list.txt"),
        "198.18.0.0/15\n10.1.2.3/8\n172.16.9.9/12\n",
    )
    .unwrap();
    let extra = "\n[[rule]]\nname = \"inline\"\naction = \"deny\"\nsrc = [\"10.1.2.3/8\", \"192.0.2.9/24\", \"192.0.2.1\"]\n\n[[rule]]\nname = \"file\"\naction = \"deny\"\nsrc_file = \"list.txt\"\n";
    let net = parse(&text(extra), "net.toml", &dir.0).unwrap();
    assert_eq!(net.rules[0].src_v4.len(), 3);
    let w = net.warning_lines();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with(&format!(
            "net.toml:{}: rule \"inline\": src: 10.1.2.3/8 has host bits set and is read as 10.0.0.0/8; write that, or 10.1.2.3/32 for the one host (1 more like it)",
            line_of(extra, "src =", 0)
        )),
        "{w:?}"
    );
    assert!(
        w[1].contains("rule \"file\": src_file:")
            && w[1].contains("list.txt:2: 10.1.2.3/8 has host bits")
            && w[1].contains("(1 more lines like it)"),
        "{w:?}"
    );
    let strict = net.strict().unwrap_err().to_string();
    assert_eq!(strict.lines().count(), 2, "{strict}");
}

#[test]
fn a_huge_value_gives_a_short_error() {
    let huge = "A".repeat(1_000_000);
    for extra in [
        node(&huge),
        format!(
            "\n[[service]]\nname = \"g\"\nvip = \"{huge}\"\nprotocol = \"{huge}\"\nports = \"{huge}\"\nbackends = [\"{huge}\"]\nweights = {{ \"{huge}\" = 1 }}\nlimit = {{ pps = 1, bps = \"{huge}\", block = \"{huge}\" }}\n"
        ),
        format!(
            "\n[[rule]]\naction = \"{huge}\"\nsrc = [\"{huge}\"]\ntcp_flags = \"{huge}\"\nprotocol = \"{huge}\"\nttl = \"{huge}\"\n"
        ),
        format!("\n[[node]]\n{huge} = 1\n"),
        format!("\n[[profile]]\nname = \"p\"\npps = \"{huge}\"\n"),
        huge.clone(),
    ] {
        let e = err(&extra);
        let longest = e.lines().map(str::len).max().unwrap_or(0);
        assert!(
            longest < 600,
            "a {longest}-byte line:\n{}",
            &e[..e.len().min(2000)]
        );
    }
}

#[test]
fn port_overlaps_are_found_on_ranges() {
    let icmp = |name: &str| {
        format!(
            "\n[[service]]\nname = \"{name}\"\nvip = \"203.0.113.10\"\nprotocol = \"icmp\"\nbackends = [\"be-1\"]\n"
        )
    };
    let extra = format!(
        "{}{}{}{}{}",
        udp_service("inner", "150-160"),
        udp_service("outer", "100-200"),
        udp_service("self", "300-310\", \"305-320"),
        icmp("ping"),
        icmp("ping2"),
    )
    .replace(
        "ports = \"300-310\", \"305-320\"",
        "ports = [\"300-310\", \"305-320\"]",
    );
    let e = err(&extra);
    let vip = line_of(&extra, "vip =", 1);
    assert_problem(
        &e,
        vip,
        "service \"outer\": ports:",
        "203.0.113.10 udp port 150 is already served by service \"inner\"",
    );
    assert_problem(
        &e,
        line_of(&extra, "vip =", 4),
        "service \"ping2\": ports:",
        "icmp port 0 is already served by service \"ping\"",
    );
    // A service's own ranges may overlap.
    assert_eq!(e.lines().count(), 2, "{e}");
}

#[test]
fn many_wide_services_are_checked_in_bounded_time() {
    // 600 services of 65,535 ports each: port overlaps are found on ranges, not on 39 million
    // (VIP, port) entries (gigabytes, and a minute in a debug build), and with more services
    // than the kernel takes the rules are not counted per service.
    let mut extra = String::new();
    for i in 0..600 {
        extra.push_str(&format!(
            "\n[[service]]\nname = \"s{i}\"\nvip = \"10.0.{}.{}\"\nprotocol = \"udp\"\nports = [\"1-65535\", \"100-200\"]\nbackends = [\"be-1\"]\n\n[[rule]]\naction = \"deny\"\nservices = [\"s{i}\"]\n",
            i / 250,
            1 + i % 250
        ));
    }
    let start = std::time::Instant::now();
    let e = err(&extra);
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("600 services; at most 64"), "{e}");
}

#[test]
fn thousands_of_problems_are_cut_to_the_first_ones() {
    let mut extra = String::new();
    for i in 0..1000 {
        extra.push_str(&format!("\n[[profile]]\nname = \"p{i}\"\npps = 0\n"));
    }
    let e = err(&extra);
    assert_eq!(e.lines().count(), MAX_SHOWN_PROBLEMS + 1, "{e}");
    assert!(
        e.lines()
            .last()
            .unwrap()
            .contains("and 800 more problems not shown"),
        "{e}"
    );
}

#[test]
fn a_file_that_is_not_a_prefix_list_is_never_quoted() {
    let dir = Scratch::new("secret");
    std::fs::write(
        dir.0.join("shadow"),
        "root:$y$j9T$TOPSECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
    )
    .unwrap();
    std::fs::write(dir.0.join("hexkey"), "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::write(dir.0.join("typo"), "# list\n198.18.0.0/15\n10.0.0.0/33\n").unwrap();
    let extra = "\n[[rule]]\nname = \"a\"\naction = \"deny\"\nsrc_file = \"shadow\"\n\n[[rule]]\nname = \"b\"\naction = \"deny\"\nsrc_file = \"hexkey\"\n\n[[rule]]\nname = \"c\"\naction = \"deny\"\nsrc_file = \"typo\"\n";
    let e = parse(&text(extra), "net.toml", &dir.0)
        .unwrap_err()
        .to_string();
    for secret in ["$y$j9T", "TOPSECRET", "daemon", "0123456789abcdef"] {
        assert!(!e.contains(secret), "{secret} in:\n{e}");
    }
    assert_problem(
        &e,
        line_of(extra, "\"shadow\"", 0),
        "rule \"a\": src_file:",
        "shadow:1: not a prefix (the line is not shown",
    );
    assert_problem(
        &e,
        line_of(extra, "\"hexkey\"", 0),
        "rule \"b\": src_file:",
        "hexkey:1: not a prefix",
    );
    // A line that looks like a prefix is quoted, so a typo can be found.
    assert_problem(
        &e,
        line_of(extra, "\"typo\"", 0),
        "rule \"c\": src_file:",
        "typo:3: \"10.0.0.0/33\" is not a prefix",
    );
    assert_eq!(
        e.lines().count(),
        3,
        "one line per file, not one per bad line:\n{e}"
    );
}

#[test]
fn a_src_file_must_be_a_regular_file() {
    let dir = Scratch::new("fifo");
    let fifo = dir.0.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let extra = "\n[[rule]]\nname = \"z\"\naction = \"deny\"\nsrc_file = \"/dev/zero\"\n\n[[rule]]\nname = \"f\"\naction = \"deny\"\nsrc_file = \"fifo\"\n";
    // Would hang on the FIFO, or read /dev/zero until memory runs out, if either were opened
    // as a file.
    let e = parse(&text(extra), "net.toml", &dir.0)
        .unwrap_err()
        .to_string();
    assert_problem(
        &e,
        line_of(extra, "/dev/zero", 0),
        "rule \"z\": src_file:",
        "cannot read src_file /dev/zero: it is a character device, not a regular file",
    );
    assert_problem(
        &e,
        line_of(extra, "\"fifo\"", 0),
        "rule \"f\": src_file:",
        "FIFO (named pipe), not a regular file",
    );
}

#[test]
fn the_shared_fixture_stays_valid() {
    // The base every test here appends to has no warnings of its own.
    assert!(ok("").warnings.is_empty());
}
