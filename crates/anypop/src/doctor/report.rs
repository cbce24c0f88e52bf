//! The report: each check's verdict, what was found and the fix, grouped; rendered as the text
//! `anypop doctor` prints or as JSON.

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    /// The fixed-width tag a line starts with; `FAIL` is upper case so it stands out in a scroll.
    pub fn tag(self) -> &'static str {
        match self {
            Verdict::Ok => "[ ok ]",
            Verdict::Warn => "[warn]",
            Verdict::Fail => "[FAIL]",
        }
    }
}

/// One check: what was found and, unless it is ok, the fix.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub verdict: Verdict,
    pub what: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(what: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Ok,
            what: what.into(),
            fix: None,
        }
    }

    pub fn warn(what: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Warn,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(what: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Fail,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    /// `[ ok ] what` or `[warn] what — fix: …`, always one line.
    pub fn line(&self) -> String {
        match &self.fix {
            Some(fix) if self.verdict != Verdict::Ok => {
                format!("{} {} — fix: {}", self.verdict.tag(), self.what, fix)
            }
            _ => format!("{} {}", self.verdict.tag(), self.what),
        }
    }
}

/// The checks about one thing (the kernel, an interface, the node).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Group {
    pub title: String,
    pub checks: Vec<Check>,
}

impl Group {
    pub(super) fn new(title: impl Into<String>) -> Group {
        Group {
            title: title.into(),
            checks: Vec::new(),
        }
    }
}

/// Everything `anypop doctor` found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub groups: Vec<Group>,
}

impl Report {
    pub fn count(&self, v: Verdict) -> usize {
        self.groups
            .iter()
            .flat_map(|g| &g.checks)
            .filter(|c| c.verdict == v)
            .count()
    }

    /// Ready to deploy: nothing failed (warnings are the operator's call).
    pub fn passed(&self) -> bool {
        self.count(Verdict::Fail) == 0
    }

    /// The text `anypop doctor` prints: a title per group, one line per check, a summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            out.push_str(&g.title);
            out.push('\n');
            for c in &g.checks {
                out.push_str("  ");
                out.push_str(&c.line());
                out.push('\n');
            }
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// The same for scripts and fleet tooling: `{"groups": [{"title", "checks": [{"verdict",
    /// "what", "fix"}]}], "ok", "warn", "fail", "passed"}`.
    pub fn json(&self) -> String {
        serde_json::json!({
            "groups": self.groups,
            "ok": self.count(Verdict::Ok),
            "warn": self.count(Verdict::Warn),
            "fail": self.count(Verdict::Fail),
            "passed": self.passed(),
        })
        .to_string()
    }

    pub fn summary(&self) -> String {
        let (ok, warn, fail) = (
            self.count(Verdict::Ok),
            self.count(Verdict::Warn),
            self.count(Verdict::Fail),
        );
        let verdict = if fail > 0 {
            "not ready: fix every FAIL above"
        } else if warn > 0 {
            "ready, with warnings"
        } else {
            "ready"
        };
        format!("doctor: {ok} ok, {warn} warn, {fail} FAIL — {verdict}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn lines_and_summary() {
        assert_eq!(Check::ok("kernel 6.1").line(), "[ ok ] kernel 6.1");
        assert_eq!(
            Check::fail("LRO is on", "ethtool -K eth0 lro off").line(),
            "[FAIL] LRO is on — fix: ethtool -K eth0 lro off"
        );
        assert_eq!(Check::warn("x", "y").line(), "[warn] x — fix: y");
        let mut r = Report::default();
        r.groups.push(Group {
            title: "kernel".into(),
            checks: vec![Check::ok("a"), Check::warn("b", "c")],
        });
        assert!(r.passed());
        assert_eq!(
            r.summary(),
            "doctor: 1 ok, 1 warn, 0 FAIL — ready, with warnings"
        );
        r.groups.push(Group {
            title: "interface eth0".into(),
            checks: vec![Check::fail("d", "e")],
        });
        assert!(!r.passed());
        let text = r.render();
        assert!(text.starts_with(
            "kernel\n  [ ok ] a\n  [warn] b — fix: c\ninterface eth0\n  [FAIL] d — fix: e\n"
        ));
        assert!(text.ends_with("doctor: 1 ok, 1 warn, 1 FAIL — not ready: fix every FAIL above\n"));
        let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(j["fail"], 1);
        assert_eq!(j["passed"], false);
        assert_eq!(j["groups"][1]["title"], "interface eth0");
        assert_eq!(j["groups"][1]["checks"][0]["verdict"], "fail");
        assert_eq!(j["groups"][1]["checks"][0]["fix"], "e");
        assert_eq!(j["groups"][0]["checks"][0]["fix"], serde_json::Value::Null);
    }
}
