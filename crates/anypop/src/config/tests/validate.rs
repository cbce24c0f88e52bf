//! The tests that lived in `validate.rs`: the example, the main refusals and the value parsers,
//! on the shared fixture of [`super`].
use std::{path::Path, time::Duration};

use super::{base, err, line_of, text};
use crate::config::sample;
use crate::config::{
    parse,
    values::{parse_bps, parse_duration, parse_range, parse_tcp_flags},
};

#[test]
fn the_example_is_valid() {
    let net = parse(
        include_str!("../example.toml"),
        "example.toml",
        Path::new("."),
    )
    .unwrap();
    assert_eq!(net.services.len(), 2);
    assert_eq!(net.rules.len(), 4);
    assert_eq!(
        net.services[0].backends,
        vec![("be-fra-1".to_string(), 1), ("be-fra-2".to_string(), 0)]
    );
    assert_eq!(net.services[0].limit.as_ref().unwrap().bps, Some(4_000_000));
    assert_eq!(net.rules[1].tcp_flags, Some((0x12, 0x02)));
    assert!(net.node("pop-ams-1").unwrap().xdp_mode_auto(&net.defaults));
    assert!(!net.node("pop-nyc-1").unwrap().xdp_mode_auto(&net.defaults));
}

#[test]
fn empty_port_range_names_line_field_and_fix() {
    let extra = "\n[[service]]\nname = \"g\"\nvip = \"203.0.113.10\"\nprotocol = \"udp\"\nports = \"28015-28010\"\n";
    let e = err(extra);
    let l = line_of(extra, "28015-28010", 0);
    assert!(
        e.contains(&format!("net.toml:{l}: service \"g\": ports:")),
        "{e}"
    );
    assert!(e.contains("empty range") && e.contains("LOW-HIGH"), "{e}");
}

#[test]
fn syntax_errors_and_unknown_keys_have_lines() {
    let e = err("\n[[service]]\nname = \"g\"\nvip = \"203.0.113.10\"\nprotocl = \"udp\"\n");
    assert!(e.contains("unknown field") && e.contains("protocl"), "{e}");
    assert!(e.starts_with("net.toml:"), "{e}");
    let e = err("\n[[service]\n");
    assert!(
        e.starts_with(&format!("net.toml:{}", base().lines().count() + 2)),
        "{e}"
    );
}

#[test]
fn all_problems_are_reported_not_just_the_first() {
    let extra = "\n[[service]]\nname = \"g\"\nvip = \"not-an-ip\"\nprotocol = \"udp\"\nports = \"70000\"\nbackends = [\"ghost\", \"pop-1\"]\n";
    let e = err(extra);
    assert_eq!(e.lines().count(), 4, "{e}");
    assert!(e.contains("vip: \"not-an-ip\" is not an IP address"), "{e}");
    assert!(e.contains("outside 1-65535"), "{e}");
    assert!(e.contains("\"ghost\" is not a node"), "{e}");
    assert!(e.contains("\"pop-1\" is a POP, not a backend"), "{e}");
}

#[test]
fn duplicates_and_unknown_references() {
    let extra = &sample::network(&[
        sample::service("g", sample::VIP, "udp").str("ports", "1-10"),
        sample::service("h", sample::VIP, "udp").str("ports", "5"),
        sample::rule("r", "limit")
            .str("profile", "nope")
            .list("services", &["zzz"]),
        sample::rule("r", "deny").str("profile", "x"),
    ]);
    let e = err(extra);
    assert!(
        e.contains("port 5 is already served by service \"g\""),
        "{e}"
    );
    assert!(e.contains("\"nope\" is not a [[profile]]"), "{e}");
    assert!(e.contains("\"zzz\" is not a [[service]]"), "{e}");
    assert!(e.contains("duplicate rule name"), "{e}");
    assert!(
        e.contains("only rules with action = \"limit\" take a profile"),
        "{e}"
    );
}

#[test]
fn nodes_need_their_role_fields() {
    let e = err(
        "\n[[node]]\nname = \"pop-2\"\nrole = \"pop\"\n\n[[node]]\nname = \"be-2\"\nrole = \"backend\"\n",
    );
    assert!(e.contains("node \"pop-2\": interfaces: missing"), "{e}");
    assert!(e.contains("node \"pop-2\": tunnel_source: missing"), "{e}");
    assert!(e.contains("node \"be-2\": address: missing"), "{e}");
    assert!(e.contains("node \"be-2\": interface: missing"), "{e}");
}

#[test]
fn limits_are_checked() {
    let e = err(
        "\n[[profile]]\nname = \"p\"\nburst = 1.0\n\n[[profile]]\nname = \"q\"\npps = 10\nburst = 0.01\nblock = \"5 fortnights\"\n",
    );
    assert!(
        e.contains("profile \"p\": limit: has neither pps nor bps"),
        "{e}"
    );
    assert!(e.contains("below one packet"), "{e}");
    assert!(e.contains("block"), "{e}");
}

#[test]
fn an_ipv4_service_needs_a_backend() {
    let e = err(
        "\n[[service]]\nname = \"g\"\nvip = \"203.0.113.10\"\nprotocol = \"udp\"\nports = \"1\"\n",
    );
    assert!(
        e.contains("service \"g\": backends: no backend serves this VIP"),
        "{e}"
    );
}

#[test]
fn icmp_and_port_rules() {
    let e = err(
        "\n[[service]]\nname = \"i\"\nvip = \"203.0.113.10\"\nprotocol = \"icmp\"\nports = \"1\"\n\n[[service]]\nname = \"u\"\nvip = \"203.0.113.10\"\nprotocol = \"udp\"\n",
    );
    assert!(e.contains("an icmp service takes no ports"), "{e}");
    assert!(e.contains("service \"u\": ports: missing"), "{e}");
}

#[test]
fn vip_may_not_be_a_node_address() {
    let e = err(
        "\n[[service]]\nname = \"g\"\nvip = \"192.0.2.21\"\nprotocol = \"udp\"\nports = \"1\"\n",
    );
    assert!(e.contains("also the address of node \"be-1\""), "{e}");
}

#[test]
fn too_many_rules_for_one_service() {
    let mut extra = String::from(
        "\n[[service]]\nname = \"g\"\nvip = \"203.0.113.10\"\nprotocol = \"udp\"\nports = \"1\"\n",
    );
    for i in 0..65 {
        extra.push_str(&format!("\n[[rule]]\naction = \"deny\"\nttl = \"{i}\"\n"));
    }
    let e = err(&extra);
    assert!(e.contains("65 rules apply to it; at most 64"), "{e}");
}

#[test]
fn too_many_prefix_sets() {
    let mut extra = String::new();
    for i in 0..65 {
        extra.push_str(&format!(
            "\n[[rule]]\naction = \"deny\"\nsrc = [\"10.{i}.0.0/16\"]\n"
        ));
    }
    let e = err(&extra);
    assert!(
        e.contains("65 distinct source prefix lists; at most 64"),
        "{e}"
    );
}

#[test]
fn src_file_is_read_relative_and_bad_lines_are_located() {
    let dir = std::env::temp_dir().join(format!("anypop-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("good.txt"),
        "# blocklist\n198.18.0.0/15\n\n203.0.113.7\n2001:db8:bad::/48 # v6\n",
    )
    .unwrap();
    std::fs::write(dir.join("bad.txt"), "10.0.0.0/8\n10.0.0.0/33\n").unwrap();
    let text = text(
        &sample::Table::new("[[rule]]")
            .str("action", "deny")
            .str("src_file", "good.txt")
            .to_string(),
    );
    let net = parse(&text, "net.toml", &dir).unwrap();
    assert_eq!(net.rules[0].src_v4.len(), 2);
    assert_eq!(net.rules[0].src_v6.len(), 1);
    let text = super::text(&sample::network(&[
        sample::Table::new("[[rule]]")
            .str("action", "deny")
            .str("src_file", "bad.txt"),
        sample::Table::new("[[rule]]")
            .str("action", "deny")
            .str("src_file", "missing.txt"),
    ]));
    let e = parse(&text, "net.toml", &dir).unwrap_err().to_string();
    assert!(e.contains("bad.txt:2:"), "{e}");
    assert!(
        e.contains("cannot read") && e.contains("missing.txt"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn value_parsers() {
    assert_eq!(
        parse_bps(&toml::Value::String("4Mbit".into())),
        Ok(4_000_000)
    );
    assert_eq!(
        parse_bps(&toml::Value::String("1.5Gbit".into())),
        Ok(1_500_000_000)
    );
    assert_eq!(parse_bps(&toml::Value::Integer(64000)), Ok(64000));
    assert!(parse_bps(&toml::Value::String("4 parsecs".into())).is_err());
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_tcp_flags("SYN,!ACK"), Ok((0x12, 0x02)));
    assert!(parse_tcp_flags("SYN,NOPE").is_err());
    assert_eq!(
        parse_range(&toml::Value::String("1024-65535".into()), 1, 65535),
        Ok((1024, 65535))
    );
}
