//! The network files of the tests, as files under `tests/fixtures/`, and the one helper that fills
//! in their placeholders. A placeholder is a name in braces; [`fixture`] replaces each with the
//! text a test gives for it, and fails if a placeholder has no text or a text has no placeholder.
#![allow(dead_code)]

/// POP `pop-1` and backend `be-1`, with the placeholders `defaults`, `services`, `interfaces`,
/// `pop` (more keys of pop-1) and `nodes` (more nodes).
pub const POP_TOML: &str = include_str!("../fixtures/pop.toml");
/// `[defaults]` with no new-source cap.
pub const NO_SOURCE_CAP: &str = include_str!("../fixtures/no_source_cap.toml");
/// The one UDP game service `g` on 203.0.113.10:27015, served by be-1.
pub const SERVICE_G: &str = include_str!("../fixtures/service_g.toml");
/// A backend at 198.51.100.1, with the placeholders `backend` (its name) and `interface`.
pub const BACKEND_ON_TOML: &str = include_str!("../fixtures/backend_on.toml");
/// The network of the golden-packet and property tests (the lab of [`super::build_lab`]).
pub const GOLDEN_TOML: &str = include_str!("../fixtures/golden.toml");
/// The network of the backend's golden tests (the lab of [`super::backend`]).
pub const BACKEND_TOML: &str = include_str!("../fixtures/backend.toml");

/// The lab's interfaces (see [`super::build_lab`]) as a POP's `interfaces` list.
pub const A0_B0: &str = r#""a0", "b0""#;

/// `template` with every `{name}` replaced by the text `vars` gives for `name`. Panics on a
/// placeholder without a text and on a text whose placeholder the template lacks. The texts are
/// not searched for placeholders again.
pub fn fixture(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut used = vec![false; vars.len()];
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('}') {
            let name = &after[..name_len];
            let i = vars
                .iter()
                .position(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("the fixture's placeholder {{{name}}} has no text"));
            used[i] = true;
            out.push_str(vars[i].1);
            rest = &after[name_len + 1..];
        } else {
            out.push('{');
            rest = after;
        }
    }
    out.push_str(rest);
    for ((name, _), used) in vars.iter().zip(used) {
        assert!(used, "the fixture has no placeholder {{{name}}}");
    }
    out
}

/// [`POP_TOML`] with no new-source cap, pop-1 on the lab's a0 and b0, and `services` (the test's
/// services, rules and profiles).
pub fn lab_network(services: &str) -> String {
    fixture(
        POP_TOML,
        &[
            ("defaults", NO_SOURCE_CAP),
            ("services", services),
            ("interfaces", A0_B0),
            ("pop", ""),
            ("nodes", ""),
        ],
    )
}

/// The network whose POP `pop-1` runs on interface `ifname` with `xdp_mode = "{mode}"`, serving
/// [`SERVICE_G`].
pub fn pop_network(ifname: &str, mode: &str) -> String {
    fixture(
        POP_TOML,
        &[
            ("defaults", ""),
            ("services", SERVICE_G),
            ("interfaces", &format!("\"{ifname}\"")),
            ("pop", &format!("xdp_mode = \"{mode}\"")),
            ("nodes", ""),
        ],
    )
}

/// A network whose backend `be-1` runs on interface `ifname` (address 198.51.100.1).
pub fn backend_network(ifname: &str) -> String {
    fixture(
        BACKEND_ON_TOML,
        &[("backend", "be-1"), ("interface", ifname)],
    )
}
