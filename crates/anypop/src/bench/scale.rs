//! `apply_at_scale`: how long a whole config generation takes at the scale of issue 5 (parse,
//! compile, write and switch), and a one-prefix change after it.
use std::time::Instant;

use super::{PinGuard, frames::write_prefixes};
use crate::{
    compile,
    config::{self, sample},
    dataplane::edge::{Edge, EdgeSizes},
};

/// A network at the scale of issue 5: `services` services, `rules` rules (scoped so that each
/// service has at most 64), one shared blocklist of `prefixes` prefixes.
fn large_network(services: usize, rules: usize, prefix_file: &str) -> String {
    let mut tables = vec![sample::no_source_cap()];
    for i in 0..services {
        tables.push(
            sample::service(&format!("svc-{i}"), &format!("203.0.113.{}", 10 + i), "udp")
                .str("ports", "27015")
                .list("backends", &["be-1", "be-2"])
                .val("limit", "{ pps = 300, burst = 2.0 }"),
        );
    }
    for i in 0..rules {
        let rule = sample::rule(&format!("r{i}"), "deny")
            .list("services", &[&format!("svc-{}", i % services)]);
        tables.push(if i % 16 == 0 {
            rule.str("src_file", prefix_file)
        } else {
            rule.str("protocol", "udp")
                .str("dst_ports", "27015")
                .str("ttl", &(i % 256).to_string())
        });
    }
    tables.push(sample::pop("pop-1", &["a0"], sample::TUNNEL));
    tables.push(sample::backend("be-1", "eth0", "192.0.2.21"));
    tables.push(sample::backend("be-2", "eth0", "192.0.2.22"));
    sample::network(&tables)
}

/// Seconds a whole generation at scale took, by phase, and a one-prefix change after it.
pub struct ScaleApply {
    pub parse: f64,
    pub compile: f64,
    pub write: f64,
    /// Parse, compile and write of the same file with one prefix added to its blocklist.
    pub small_change: f64,
    pub small_written: crate::dataplane::edge::WriteStats,
}

/// Times a whole config generation at scale: parse + validate, compile, write the standby slot,
/// switch; then the same file with one prefix more.
pub fn apply_at_scale(
    services: usize,
    rules: usize,
    prefixes: usize,
) -> anyhow::Result<ScaleApply> {
    let dir = std::env::temp_dir().join(format!("anypop-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("blocklist.txt");
    write_prefixes(&file, prefixes)?;
    let text = large_network(services, rules, file.to_str().unwrap());
    let pins = PinGuard(std::path::PathBuf::from(format!(
        "/sys/fs/bpf/anypop-scale-{}",
        std::process::id()
    )));
    let result = (|| -> anyhow::Result<ScaleApply> {
        let mut edge = Edge::load(&pins.0, EdgeSizes::default())?;
        // A first generation, so the timed one replaces a live config as an apply would.
        let net = config::parse(&text, "scale.toml", &dir)?;
        let slot = edge.standby_generation()?;
        edge.apply(&compile::compile_edge(
            &net,
            "pop-1",
            slot,
            edge.sizes.max_services,
        )?)?;
        let t0 = Instant::now();
        let net = config::parse(&text, "scale.toml", &dir)?;
        let t1 = Instant::now();
        let slot = edge.standby_generation()?;
        let tables = compile::compile_edge(&net, "pop-1", slot, edge.sizes.max_services)?;
        let t2 = Instant::now();
        edge.apply(&tables)?;
        let t3 = Instant::now();
        // A small change: one prefix more in the shared blocklist. The slot it goes to was
        // written by the first apply, so only what differs is rewritten.
        let mut list = std::fs::read_to_string(&file)?;
        list.push_str("100.99.0.0/16\n");
        std::fs::write(&file, list)?;
        let t4 = Instant::now();
        let net = config::parse(&text, "scale.toml", &dir)?;
        let slot = edge.standby_generation()?;
        let tables = compile::compile_edge(&net, "pop-1", slot, edge.sizes.max_services)?;
        let small = edge.apply(&tables)?;
        let t5 = Instant::now();
        Ok(ScaleApply {
            parse: (t1 - t0).as_secs_f64(),
            compile: (t2 - t1).as_secs_f64(),
            write: (t3 - t2).as_secs_f64(),
            small_change: (t5 - t4).as_secs_f64(),
            small_written: small.written,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
