//! What a name in the network file may be, and how a value from the file is quoted in a message.
//!
//! Names are not just labels: a node name becomes a directory under the pin root
//! (`<pin root>/<node>/`, removed again when the daemon exits), service and rule names become
//! metric labels and capture comments, interface names go to the kernel. A node named `..` with
//! `--pin-root /` once made the exit clean-up remove all of `/run`. So every name is checked
//! against one conservative rule here, before anything is built from it.
//!
//! Values quoted back in an error are cut to a short, escaped excerpt: a 50 MB line must not give
//! a 50 MB error, and control characters must not reach the operator's terminal.

/// Longest node, service, rule or profile name: a DNS label, so a node name can also be its host
/// name, and short enough for any path or label it ends up in.
pub const NAME_MAX: usize = 63;

/// Longest interface name the kernel accepts: `IFNAMSIZ` (16) less the terminating NUL.
pub const IFNAME_MAX: usize = 15;

/// How a name may be written, for the fix part of a message.
pub const NAME_RULE: &str =
    "names are 1-63 characters of letters, digits, '.', '_' and '-', not starting with '.' or '-'";

/// How an interface may be named, for the fix part of a message.
pub const IFNAME_RULE: &str = "Linux interface names are 1-15 bytes without '/', ':', spaces or control characters, as `ip link` shows them";

/// Characters of a value quoted in a message (after escaping), before it is cut with "…".
pub const EXCERPT_MAX: usize = 80;

/// Checks a node, service, rule or profile name. `Err` says what is wrong (the caller names the
/// item and adds [`NAME_RULE`]).
///
/// Only `[A-Za-z0-9._-]`: no `/` (a path separator), no spaces, quotes or control characters
/// (metric labels, terminals), nothing outside ASCII (look-alike letters). Not starting with `.`
/// excludes `.`, `..` and hidden directories; not starting with `-` keeps a name from reading
/// as an option on a command line.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("contains {}, which names may not", quote_char(c)));
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "is {} characters long; at most {NAME_MAX}",
            name.len()
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("may not start with '.' or '-'".into());
    }
    Ok(())
}

/// Checks a node name given on the command line (`--node`), before any path is built from it.
/// The error is a whole sentence: what is wrong with which name, and the rule.
///
/// Every subcommand that takes `--node` should call this first: the name is joined to the pin
/// root, and a daemon removes that directory when it exits.
pub fn check_node_name(name: &str) -> Result<(), String> {
    check_name(name).map_err(|why| {
        format!(
            "{} is not a valid node name: it {why}; {NAME_RULE}",
            excerpt(name)
        )
    })
}

/// Checks an interface name as the kernel would (`dev_valid_name`), and refuses control
/// characters as well. `Err` says what is wrong (the caller adds [`IFNAME_RULE`]).
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > IFNAME_MAX {
        return Err(format!("is {} bytes long", name.len()));
    }
    if name == "." || name == ".." {
        return Err("is not an interface name".into());
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("contains {}", quote_char(c)));
    }
    Ok(())
}

/// `s` quoted and escaped like `{:?}`, cut after about [`EXCERPT_MAX`] characters with "…".
pub fn excerpt(s: &str) -> String {
    excerpt_max(s, EXCERPT_MAX)
}

/// [`excerpt`] with another length.
pub fn excerpt_max(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(max.min(s.len()) + 8);
    out.push('"');
    let mut used = 0;
    for c in s.chars() {
        let escaped = match c {
            '\'' => "'".to_string(),
            c => c.escape_debug().to_string(),
        };
        used += escaped.chars().count();
        if used > max {
            out.push_str("\"…");
            return out;
        }
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

/// A message from a parser that may quote the input (TOML's "unknown field `…`", serde's
/// "invalid type: string \"…\""): control characters escaped, every long unbroken run cut, and
/// the whole kept to a few hundred characters, its start and its end.
pub fn shorten_message(msg: &str) -> String {
    const RUN: usize = 60;
    const TOTAL: usize = 400;
    let escape = |c: char, out: &mut String| {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    };
    let mut out = String::new();
    let mut run = 0;
    // The last two characters of a run being cut: a closing quote or backtick is kept, so
    // `"AAAA…A",` still reads as a quoted value.
    let mut tail: Vec<char> = Vec::new();
    for c in msg.chars() {
        if c.is_whitespace() {
            tail.drain(..).for_each(|t| escape(t, &mut out));
            run = 0;
            out.push(if c == '\n' { '\n' } else { ' ' });
            continue;
        }
        run += 1;
        if run <= RUN {
            escape(c, &mut out);
            continue;
        }
        if run == RUN + 1 {
            out.push('…');
        }
        tail.push(c);
        if tail.len() > 2 {
            tail.remove(0);
        }
    }
    tail.drain(..).for_each(|t| escape(t, &mut out));
    if out.chars().count() <= TOTAL {
        return out;
    }
    let chars: Vec<char> = out.chars().collect();
    let head: String = chars[..TOTAL * 2 / 3].iter().collect();
    let tail: String = chars[chars.len() - TOTAL / 3..].iter().collect();
    format!("{head} … {tail}")
}

/// `s` with control characters escaped and nothing else changed (e.g. a path from the command
/// line that prefixes every message).
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// A path for a message: control characters escaped, and a long one cut to its end (the file
/// name says more than the start of a long directory).
pub fn path_excerpt(path: &std::path::Path) -> String {
    let s = escape_controls(&path.display().to_string());
    let n = s.chars().count();
    if n <= 2 * EXCERPT_MAX {
        return s;
    }
    let tail: String = s.chars().skip(n - 2 * EXCERPT_MAX).collect();
    format!("…{tail}")
}

fn quote_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        c => format!("{c:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_one_rule() {
        for ok in ["pop-1", "be_fra.2", "A", "x".repeat(63).as_str(), "1"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-rf",
            "/abs",
            "a/b",
            "a b",
            "tab\there",
            "nul\0",
            "esc\u{1b}[2J",
            "é",
            "x".repeat(64).as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
        let e = check_node_name("..").unwrap_err();
        assert!(
            e.contains("\"..\"") && e.contains("may not start with '.'"),
            "{e}"
        );
        assert!(check_name("a\u{7}").unwrap_err().contains("'\\u{7}'"));
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        for ok in ["eth0", "pop1-in", "veth1234567890a", "en@x", "a.b"] {
            assert_eq!(check_interface_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "eth0:1",
            "a b",
            "veth1234567890ab",
            "x\u{1}",
        ] {
            assert!(check_interface_name(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("ghost"), "\"ghost\"");
        let long = excerpt(&"A".repeat(1_000_000));
        assert!(long.len() < 100 && long.ends_with("\"…"), "{long}");
        let esc = excerpt(&"\u{1b}".repeat(1000));
        assert!(!esc.contains('\u{1b}') && esc.len() < 100, "{esc}");
        assert_eq!(excerpt("it's"), "\"it's\"");
    }

    #[test]
    fn parser_messages_are_cut() {
        let m = shorten_message(&format!(
            "invalid type: string \"{}\", expected i64",
            "V".repeat(10_000_000)
        ));
        assert!(m.len() < 200 && m.ends_with("expected i64"), "{m}");
        let m = shorten_message(&"word ".repeat(100_000));
        assert!(m.chars().count() < 420, "{}", m.len());
        assert!(!shorten_message("unknown field `\u{1b}[2J`").contains('\u{1b}'));
    }
}
