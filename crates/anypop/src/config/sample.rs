//! Network files for tests and benchmarks, written as TOML text table by table, so whoever reads
//! them back goes through the real parser (with its line numbers) and never a shortcut.
//!
//! Each [`Table`] renders as a blank line, its header and one `key = value` line per key, in the
//! order they were given; a network file is tables (and any literal text) written one after
//! another, e.g. `network(&[udp_service("game", "27015"), pop("pop-1", &["a0"], TUNNEL), …])`.
//! The usual names and addresses are constants here, so a test that needs "the game service
//! behind pop-1" says so in one line and spells out only what it is about.
use std::fmt;

/// The VIP of the sample services.
pub const VIP: &str = "203.0.113.10";
/// The POP's tunnel source in most samples (and the lab's `a0` address).
pub const TUNNEL: &str = "198.51.100.1";
/// be-1's address in most samples (the lab's neighbour behind `a0`).
pub const BE1: &str = "198.51.100.21";
/// The attackers' range of the samples' deny rules.
pub const ATTACKERS: &str = "198.18.0.0/15";

/// One TOML table (`[defaults]`) or array-of-tables entry (`[[service]]`), keys in order.
#[derive(Clone, Debug)]
pub struct Table {
    header: String,
    lines: Vec<String>,
}

impl Table {
    /// An empty table under `header`, written as it stands (`"[[rule]]"`, `"[defaults]"`).
    pub fn new(header: &str) -> Table {
        Table {
            header: header.to_string(),
            lines: Vec::new(),
        }
    }

    /// `key = "value"`.
    pub fn str(self, key: &str, value: &str) -> Table {
        self.val(key, &format!("\"{value}\""))
    }

    /// `key = ["a", "b"]`.
    pub fn list(self, key: &str, items: &[&str]) -> Table {
        let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
        self.val(key, &format!("[{}]", quoted.join(", ")))
    }

    /// `key = value`, the value as TOML text (a number, an inline table, …).
    pub fn val(mut self, key: &str, toml: &str) -> Table {
        self.lines.push(format!("{key} = {toml}"));
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n{}", self.header)?;
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// The tables one after another: a whole network file (or a piece of one).
pub fn network(tables: &[Table]) -> String {
    tables.iter().map(Table::to_string).collect()
}

/// `[defaults]` with no new-source cap: the samples' sources are few and known.
pub fn no_source_cap() -> Table {
    Table::new("[defaults]").val("new_source_cap", "0")
}

/// A service `name` on `vip` for `protocol`, with no ports and no backends yet.
pub fn service(name: &str, vip: &str, protocol: &str) -> Table {
    Table::new("[[service]]")
        .str("name", name)
        .str("vip", vip)
        .str("protocol", protocol)
}

/// The usual game service: UDP `ports` on [`VIP`], served by be-1.
pub fn udp_service(name: &str, ports: &str) -> Table {
    service(name, VIP, "udp")
        .str("ports", ports)
        .list("backends", &["be-1"])
}

/// A rule `name` with `action` and nothing to match yet.
pub fn rule(name: &str, action: &str) -> Table {
    Table::new("[[rule]]")
        .str("name", name)
        .str("action", action)
}

/// A POP on `interfaces` whose tunnels start at `tunnel_source`.
pub fn pop(name: &str, interfaces: &[&str], tunnel_source: &str) -> Table {
    Table::new("[[node]]")
        .str("name", name)
        .str("role", "pop")
        .list("interfaces", interfaces)
        .str("tunnel_source", tunnel_source)
}

/// A backend at `address` on `interface`.
pub fn backend(name: &str, interface: &str, address: &str) -> Table {
    Table::new("[[node]]")
        .str("name", name)
        .str("role", "backend")
        .str("interface", interface)
        .str("address", address)
}

/// The two nodes most samples end with: pop-1 on `interfaces` (tunnel source [`TUNNEL`]) and
/// be-1 at [`BE1`] on `eth0`.
pub fn pop1_be1(interfaces: &[&str]) -> [Table; 2] {
    [
        pop("pop-1", interfaces, TUNNEL),
        backend("be-1", "eth0", BE1),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_as_the_toml_a_person_would_write() {
        let text = network(&[
            udp_service("game", "27015").val("limit", "{ pps = 1 }"),
            rule("deny-all", "deny").list("src", &["10.0.0.0/8", "192.0.2.0/24"]),
        ]);
        assert_eq!(
            text,
            "\n[[service]]\nname = \"game\"\nvip = \"203.0.113.10\"\nprotocol = \"udp\"\n\
             ports = \"27015\"\nbackends = [\"be-1\"]\nlimit = { pps = 1 }\n\
             \n[[rule]]\nname = \"deny-all\"\naction = \"deny\"\n\
             src = [\"10.0.0.0/8\", \"192.0.2.0/24\"]\n"
        );
    }

    #[test]
    fn the_usual_network_parses() {
        let mut tables = vec![no_source_cap(), udp_service("game", "27015")];
        tables.extend(pop1_be1(&["a0"]));
        let net = crate::config::parse(&network(&tables), "t.toml", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(net.services.len(), 1);
        assert_eq!(net.nodes.len(), 2);
    }
}
