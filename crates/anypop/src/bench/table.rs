//! The rows of `anypop bench` as a Markdown table.
use std::fmt::Write as _;

use super::Row;

/// The name of a program's return value (XDP and TC number their actions differently).
fn action_name(a: u32, tc: bool) -> &'static str {
    if tc {
        return match a {
            0 => "TC_ACT_OK",
            2 => "TC_ACT_SHOT",
            7 => "TC_ACT_REDIRECT",
            _ => "?",
        };
    }
    match a {
        0 => "ABORTED",
        1 => "DROP",
        2 => "PASS",
        3 => "TX",
        4 => "REDIRECT",
        _ => "?",
    }
}

/// A Markdown table of the rows.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| program | path | verdict | ns/pkt (repeat) | ns/pkt (single run) |\n|---|---|---|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} |",
            r.program,
            r.path,
            action_name(r.action, r.tc),
            r.repeat_ns
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "n/a (rewrites frame)".into()),
            r.single_ns
        );
    }
    s
}
