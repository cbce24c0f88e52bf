//! Whole-module tests: each validation rule of the network file is checked for the *location* it
//! reports (file:line, item, field), because an operator fixing a file at 3 a.m. needs the line,
//! not just the complaint. [`validate`] holds the example and the value parsers, [`hardening`] the
//! refusals of unsafe names, unbounded files and networks that cannot work; both use the fixture
//! and helpers here, as do the tests of `crate::compile`.
mod hardening;
mod validate;

use std::path::Path;

use anypop_common::layout::*;

use super::{parse, sample};

/// Two nodes every snippet can refer to; snippets are appended after it.
fn base() -> String {
    sample::network(&[
        sample::pop("pop-1", &["eth0"], sample::TUNNEL),
        sample::backend("be-1", "eth0", "192.0.2.21"),
    ])
}

pub(crate) fn text(extra: &str) -> String {
    format!("{}{extra}", base())
}

/// The error text for BASE + `extra` (panics when the file is valid).
fn err(extra: &str) -> String {
    match parse(&text(extra), "net.toml", Path::new(".")) {
        Ok(_) => panic!("expected an error for:\n{extra}"),
        Err(e) => e.to_string(),
    }
}

/// 1-based line of the `nth` (0-based) line of BASE + `extra` containing `needle`.
fn line_of(extra: &str, needle: &str, nth: usize) -> usize {
    text(extra)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} not in snippet"))
        .0
        + 1
}

/// Asserts that some line of `e` starts with `net.toml:LINE: PREFIX` and contains `words`.
fn assert_problem(e: &str, line: usize, prefix: &str, words: &str) {
    let start = format!("net.toml:{line}: {prefix}");
    assert!(
        e.lines()
            .any(|l| l.starts_with(&start) && l.contains(words)),
        "no line starting with {start:?} and containing {words:?} in:\n{e}"
    );
}

/// [`sample::udp_service`] as text, to append to other snippets.
fn udp_service(name: &str, ports: &str) -> String {
    sample::udp_service(name, ports).to_string()
}

#[test]
fn duplicate_names_point_at_the_second_definition() {
    let extra = format!(
        "{}{}\n[[profile]]\nname = \"p\"\npps = 10\n\n[[profile]]\nname = \"p\"\npps = 20\n\n[[node]]\nname = \"be-1\"\nrole = \"backend\"\ninterface = \"eth1\"\naddress = \"192.0.2.99\"\n",
        udp_service("g", "1"),
        udp_service("g", "2"),
    );
    let e = err(&extra);
    assert_problem(
        &e,
        line_of(&extra, "name = \"g\"", 1),
        "service \"g\": name:",
        "duplicate service name",
    );
    assert_problem(
        &e,
        line_of(&extra, "name = \"p\"", 1),
        "profile \"p\": name:",
        "duplicate profile name",
    );
    assert_problem(
        &e,
        line_of(&extra, "name = \"be-1\"", 1),
        "node \"be-1\": name:",
        "duplicate node name",
    );
    assert_eq!(e.lines().count(), 3, "{e}");
}

#[test]
fn unknown_references_name_the_missing_thing() {
    let extra = &sample::network(&[
        sample::backend("be-2", "eth0", "192.0.2.22").list("pops", &["pop-9"]),
        sample::service("g", sample::VIP, "udp")
            .str("ports", "1")
            .list("backends", &["be-1", "ghost", "pop-1"]),
        sample::rule("lim", "limit").str("profile", "nope"),
        sample::rule("scoped", "deny").list("services", &["zzz"]),
    ]);
    let e = err(extra);
    assert_problem(
        &e,
        line_of(extra, "pops =", 0),
        "node \"be-2\": pops:",
        "\"pop-9\" is not a POP",
    );
    let bl = line_of(extra, "backends =", 0);
    assert_problem(
        &e,
        bl,
        "service \"g\": backends:",
        "\"ghost\" is not a node",
    );
    assert_problem(
        &e,
        bl,
        "service \"g\": backends:",
        "\"pop-1\" is a POP, not a backend",
    );
    assert_problem(
        &e,
        line_of(extra, "profile = \"nope\"", 0),
        "rule \"lim\": profile:",
        "\"nope\" is not a [[profile]]",
    );
    assert_problem(
        &e,
        line_of(extra, "services = [\"zzz\"]", 0),
        "rule \"scoped\": services:",
        "\"zzz\" is not a [[service]]",
    );
}

#[test]
fn port_mistakes_are_located_and_explained() {
    let extra = format!(
        "{}{}{}",
        udp_service("zero", "0"),
        udp_service("words", "lots"),
        udp_service("backwards", "28015-28010"),
    );
    let e = err(&extra);
    assert_problem(
        &e,
        line_of(&extra, "ports = \"0\"", 0),
        "service \"zero\": ports:",
        "outside 1-65535",
    );
    assert_problem(
        &e,
        line_of(&extra, "ports = \"lots\"", 0),
        "service \"words\": ports:",
        "N or LOW-HIGH",
    );
    assert_problem(
        &e,
        line_of(&extra, "28015-28010", 0),
        "service \"backwards\": ports:",
        "is an empty range (start above end); write LOW-HIGH with LOW <= HIGH",
    );
    assert_eq!(e.lines().count(), 3, "{e}");
}

#[test]
fn icmp_takes_no_ports_and_udp_needs_them() {
    let extra = "\n[[service]]\nname = \"ping\"\nvip = \"203.0.113.10\"\nprotocol = \"icmp\"\nports = \"1\"\nbackends = [\"be-1\"]\n\n[[service]]\nname = \"u\"\nvip = \"203.0.113.11\"\nprotocol = \"udp\"\nbackends = [\"be-1\"]\n";
    let e = err(extra);
    assert_problem(
        &e,
        line_of(extra, "ports = \"1\"", 0),
        "service \"ping\": ports:",
        "takes no ports",
    );
    // A missing field has no span of its own: the error points at the [[service]] header.
    assert_problem(
        &e,
        line_of(extra, "[[service]]", 1),
        "service \"u\": ports:",
        "missing",
    );
}

#[test]
fn overlapping_services_name_both() {
    let extra = format!(
        "{}{}",
        udp_service("first", "100-200"),
        udp_service("second", "150")
    );
    let e = err(&extra);
    let l = e
        .lines()
        .find(|l| l.contains("already served"))
        .unwrap_or_else(|| panic!("{e}"));
    assert!(
        l.contains("service \"second\"") && l.contains("service \"first\"") && l.contains("150"),
        "{l}"
    );
}

#[test]
fn nodes_missing_role_fields_point_at_their_header() {
    let extra = "\n[[node]]\nname = \"pop-2\"\nrole = \"pop\"\n\n[[node]]\nname = \"be-2\"\nrole = \"backend\"\n";
    let e = err(extra);
    let pop = line_of(extra, "[[node]]", 2);
    let be = line_of(extra, "[[node]]", 3);
    assert_problem(&e, pop, "node \"pop-2\": interfaces:", "missing");
    assert_problem(&e, pop, "node \"pop-2\": tunnel_source:", "missing");
    assert_problem(&e, be, "node \"be-2\": address:", "missing");
    assert_problem(&e, be, "node \"be-2\": interface:", "missing");
}

#[test]
fn rate_limits_are_checked_where_written() {
    let extra = r#"
[[profile]]
name = "none"
burst = 2.0

[[profile]]
name = "zero"
pps = 0

[[profile]]
name = "thin"
pps = 10
burst = 0.05

[[profile]]
name = "tiny-bytes"
bps = "8kbit"
burst = 1.0

[[service]]
name = "g"
vip = "203.0.113.10"
protocol = "udp"
ports = "1"
backends = ["be-1"]
limit = { bps = "fast" }
"#;
    let e = err(extra);
    assert_problem(
        &e,
        line_of(extra, "name = \"none\"", 0) - 1,
        "profile \"none\": limit:",
        "neither pps nor bps",
    );
    assert_problem(
        &e,
        line_of(extra, "pps = 0", 0),
        "profile \"zero\": pps:",
        "above zero",
    );
    assert_problem(
        &e,
        line_of(extra, "burst = 0.05", 0),
        "profile \"thin\": burst:",
        "below one packet",
    );
    // 8 kbit/s × 1 s = 1000 bytes: not even one full-size packet fits the bucket.
    assert_problem(
        &e,
        line_of(extra, "burst = 1.0", 0),
        "profile \"tiny-bytes\": burst:",
        "1500 bytes",
    );
    assert_problem(
        &e,
        line_of(extra, "limit = {", 0),
        "service \"g\": bps:",
        "not a rate",
    );
}

#[test]
fn limit_action_and_profile_go_together() {
    let extra = "\n[[profile]]\nname = \"p\"\npps = 10\n\n[[rule]]\nname = \"a\"\naction = \"limit\"\n\n[[rule]]\nname = \"b\"\naction = \"deny\"\nprofile = \"p\"\n";
    let e = err(extra);
    assert_problem(
        &e,
        line_of(extra, "action = \"limit\"", 0),
        "rule \"a\": profile:",
        "needs profile",
    );
    assert_problem(
        &e,
        line_of(extra, "profile = \"p\"", 0),
        "rule \"b\": profile:",
        "only rules with action = \"limit\"",
    );
}

#[test]
fn bad_prefixes_are_quoted_with_their_line() {
    let extra =
        "\n[[rule]]\naction = \"deny\"\nsrc = [\"10.0.0.0/8\", \"10.0.0.0/40\", \"nonsense\"]\n";
    let e = err(extra);
    let l = line_of(extra, "src =", 0);
    assert_problem(&e, l, "rule \"rule-1\": src:", "\"10.0.0.0/40\"");
    assert_problem(&e, l, "rule \"rule-1\": src:", "\"nonsense\"");
}

#[test]
fn too_many_rules_in_the_file() {
    let mut extra = String::new();
    for i in 0..=MAX_RULES_TOTAL {
        extra.push_str(&format!(
            "\n[[rule]]\naction = \"deny\"\nttl = \"{}\"\n",
            i % 256
        ));
    }
    let e = err(&extra);
    assert!(e.contains("1025 rules; at most 1024"), "{e}");
}

#[test]
fn identical_prefix_lists_share_one_set() {
    // 65 rules naming the same prefixes (in different order and spelling) use one set, so the
    // limit of 64 sets is not reached.
    let mut extra = String::new();
    for i in 0..65 {
        let src = if i % 2 == 0 {
            "[\"10.0.0.0/8\", \"192.0.2.1\"]"
        } else {
            "[\"192.0.2.1/32\", \"10.1.2.3/8\", \"10.0.0.0/8\"]"
        };
        extra.push_str(&format!("\n[[rule]]\naction = \"deny\"\nsrc = {src}\n"));
    }
    let net = parse(&text(&extra), "net.toml", Path::new(".")).unwrap();
    assert_eq!(net.rules.len(), 65);
    assert!(net.rules.iter().all(|r| r.src_v4 == net.rules[0].src_v4));
}

#[test]
fn a_vip_may_not_be_a_node_address() {
    let extra = "\n[[service]]\nname = \"g\"\nvip = \"198.51.100.1\"\nprotocol = \"udp\"\nports = \"1\"\nbackends = [\"be-1\"]\n";
    let e = err(extra);
    assert_problem(
        &e,
        line_of(extra, "vip =", 0),
        "service \"g\": vip:",
        "node \"pop-1\"",
    );
}

#[test]
fn toml_syntax_errors_carry_the_line() {
    let extra = "\n[[service]]\nname = \"g\nvip = 1\n";
    let e = err(extra);
    let l = line_of(extra, "name = \"g", 0);
    assert!(e.starts_with(&format!("net.toml:{l}:")), "{e}");
    let extra = "\n[defaults]\nfragmets = \"drop\"\n";
    let e = err(extra);
    assert!(e.contains("fragmets"), "{e}");
    assert!(
        e.starts_with(&format!("net.toml:{}:", line_of(extra, "fragmets", 0))),
        "{e}"
    );
}

#[test]
fn unknown_node_lists_the_known_ones() {
    let net = parse(&base(), "net.toml", Path::new(".")).unwrap();
    let e = net.node("pop-9").unwrap_err().to_string();
    assert!(e.contains("pop-1") && e.contains("be-1"), "{e}");
    assert_eq!(
        net.node("be-1").unwrap().address.unwrap().octets(),
        [192, 0, 2, 21]
    );
}

#[test]
fn the_hash_follows_the_bytes() {
    let a = parse(&base(), "net.toml", Path::new(".")).unwrap();
    let b = parse(&base(), "other.toml", Path::new(".")).unwrap();
    let c = parse(
        &format!("{}\n# comment\n", base()),
        "net.toml",
        Path::new("."),
    )
    .unwrap();
    assert_eq!(a.source_text_hash, b.source_text_hash);
    assert_ne!(a.source_text_hash, c.source_text_hash);
}
