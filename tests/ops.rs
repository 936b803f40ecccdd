//! Operations (issue 15 items 2 and 3): the manual pages, shell completions and alert rules.
//!
//! - every visible subcommand of `cyrvault` (as `--help` lists them) gets a page from
//!   `cyrvault man`, and every page (those and the two hand-written ones in `man/`)
//!   renders with groff without a warning; `man -l` shows cyrvault-restore(1) with
//!   its options, exit statuses and SEE ALSO;
//! - the hand-written pages cannot drift: cyrvaultd(8) documents exactly the options
//!   `RuntimeOptions::parse` takes and every `cyrvaultd_*` option the service reads,
//!   cyrvault.conf(5) exactly the keys the `fleet::config` parser reads (and so accepts);
//! - the bash completion loads in bash and completes subcommands;
//! - the example alert rules pass `promtool test rules` and are what the guide shows.
//!
//! The packaged pages (`man cyrvault-restore` after `dpkg -i`) are checked by
//! `scripts/package-test.sh`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cyrvault::service::master::RuntimeOptions;

fn cyrvault(args: &[&str]) -> String {
    let out = Command::new(crate::bins::cyrvault())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cyrvault {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cyrvault-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The subcommands `cyrvault --help` lists (hidden ones are not listed).
fn listed_subcommands() -> Vec<String> {
    let help = cyrvault(&["--help"]);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

/// groff's warnings for one page (empty: clean). groff is what man(1) runs.
fn groff_warnings(page: &Path) -> String {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(page)
        .output()
        .expect("groff (Debian's groff-base; scripts/setup.sh installs it)");
    assert!(out.status.success(), "groff failed on {}", page.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_subcommand_has_a_page_and_every_page_renders_cleanly() {
    let dir = scratch("man");
    let written = cyrvault(&["man", dir.to_str().unwrap()]);
    let subs = listed_subcommands();
    assert!(subs.len() >= 15, "{subs:?}");
    for s in &subs {
        let page = dir.join(format!("cyrvault-{s}.1"));
        assert!(page.exists(), "no page for `cyrvault {s}`");
        assert!(written.contains(&page.display().to_string()));
    }
    assert!(dir.join("cyrvault.1").exists());
    assert!(
        dir.join("cyrvault-inspect-index.1").exists(),
        "nested pages"
    );
    assert!(!dir.join("cyrvault-worker.1").exists(), "hidden: no page");
    assert!(!dir.join("cyrvault-man.1").exists(), "hidden: no page");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.push(repo("man/cyrvaultd.8"));
    pages.push(repo("man/cyrvault.conf.5"));
    for p in &pages {
        let w = groff_warnings(p);
        assert!(w.is_empty(), "{}: {w}", p.display());
    }

    // what an admin reads: man renders the page with its options and sections
    let out = Command::new("man")
        .arg("-l")
        .arg(dir.join("cyrvault-restore.1"))
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output()
        .expect("man (Debian's man-db; scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "cyrvault restore",
        "--to-maildir",
        "--include-expunged",
        "EXIT STATUS",
        "EX_TEMPFAIL",
        "SEE ALSO",
        "cyrvault(1)",
        "cyrvault.conf(5)",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn os(words: &[&str]) -> Vec<OsString> {
    words.iter().map(OsString::from).collect()
}

#[test]
fn cyrvaultd_page_documents_exactly_the_options_the_service_takes() {
    let page = std::fs::read_to_string(repo("man/cyrvaultd.8")).unwrap();
    let options = page
        .split(".SH OPTIONS")
        .nth(1)
        .and_then(|s| s.split("\n.SH ").next())
        .expect("an OPTIONS section");
    // `.TP` then `.BI \-C " file"` (takes a value) or `.B \-D` (a flag)
    let mut documented = BTreeSet::new();
    let lines: Vec<&str> = options.lines().collect();
    for w in lines.windows(2) {
        if w[0] != ".TP" {
            continue;
        }
        let (takes_value, rest) = match w[1].split_once(' ') {
            Some((".BI", r)) => (true, r),
            Some((".B", r)) => (false, r),
            _ => panic!("unexpected option line {:?}", w[1]),
        };
        let letter = rest
            .strip_prefix("\\-")
            .and_then(|r| r.chars().next())
            .unwrap_or_else(|| panic!("no option in {:?}", w[1]));
        documented.insert(letter);
        let flag = format!("-{letter}");
        if takes_value {
            let o = RuntimeOptions::parse(&os(&[&flag, "7"])).unwrap();
            assert!(o.passthrough.is_empty(), "{flag} takes its value");
            assert!(
                RuntimeOptions::parse(&os(&[&flag])).is_err(),
                "{flag} needs a value"
            );
        } else {
            let o = RuntimeOptions::parse(&os(&[&flag])).unwrap();
            assert!(o.passthrough.is_empty(), "{flag} is an option");
        }
    }
    // and every letter the parser takes is documented
    for l in ('A'..='Z').chain('a'..='z') {
        let flag = format!("-{l}");
        let taken = match RuntimeOptions::parse(&os(&[&flag])) {
            Err(_) => true,
            Ok(o) => o.passthrough.is_empty(),
        };
        assert_eq!(
            taken,
            documented.contains(&l),
            "{flag}: parser takes it = {taken}, page documents it = {}",
            documented.contains(&l)
        );
    }

    // every cyrvaultd_* option the service reads is on the page
    let mut read = BTreeSet::new();
    for entry in std::fs::read_dir(repo("src/service")).unwrap() {
        let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for part in src.split("option(&conf, \"").skip(1) {
            if let Some(name) = part.split('"').next() {
                read.insert(format!("cyrvaultd_{name}"));
            }
        }
        // the names a loop reads (`for name in ["secret_file", ...]`)
        for part in src.split("for name in [\"").skip(1) {
            let list = part.split(']').next().unwrap_or("");
            for name in list.split('"').step_by(2) {
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    read.insert(format!("cyrvaultd_{name}"));
                }
            }
        }
        // and the options read by their whole name (`conf.get_switch("cyrvaultd_...")`)
        for part in src.split("(\"cyrvaultd_").skip(1) {
            if let Some(name) = part.split('"').next()
                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                read.insert(format!("cyrvaultd_{name}"));
            }
        }
    }
    assert!(read.contains("cyrvaultd_secret_file"), "{read:?}");
    for o in &read {
        assert!(
            page.contains(&format!(".B {o}")),
            "{o} is read by the service but not documented in man/cyrvaultd.8"
        );
    }
}

#[test]
fn conf_page_documents_exactly_the_keys_the_parser_accepts() {
    let page = std::fs::read_to_string(repo("man/cyrvault.conf.5")).unwrap();
    // each key is a `.TP` entry: `.B key` (global) or `.IB N _suffix` (per server)
    let (mut global, mut per_server) = (BTreeSet::new(), BTreeSet::new());
    let lines: Vec<&str> = page.lines().collect();
    for w in lines.windows(2) {
        if w[0] != ".TP" {
            continue;
        }
        if let Some(k) = w[1].strip_prefix(".B ") {
            global.insert(k.replace("\\-", "-"));
        } else if let Some(rest) = w[1].strip_prefix(".IB N _") {
            per_server.insert(rest.split_whitespace().next().unwrap().to_string());
        }
    }
    // what host/src/fleet/config.rs reads while parsing, not a list kept beside it
    let accepted = cyrvault_host::fleet::config::accepted_keys();
    assert!(accepted.global.contains("prune_keep_daily"), "{accepted:?}");
    assert_eq!(
        global, accepted.global,
        "man/cyrvault.conf.5 (left) and the keys cyrvault.conf accepts (right)"
    );
    assert_eq!(
        per_server, accepted.per_server,
        "man/cyrvault.conf.5's N_ keys (left) and the per-server keys accepted (right)"
    );
}

#[test]
fn completions_load_and_complete_subcommands() {
    let dir = scratch("completions");
    let bash = dir.join("cyrvault.bash");
    std::fs::write(&bash, cyrvault(&["completions", "bash"])).unwrap();
    // load it, then ask it what follows `cyrvault res`
    let script = format!(
        "source {}\nCOMP_WORDS=(cyrvault res)\nCOMP_CWORD=1\nCOMP_LINE='cyrvault res'\n\
         COMP_POINT=${{#COMP_LINE}}\n$(complete -p cyrvault | sed 's/.*-F \\([^ ]*\\).*/\\1/') \
         cyrvault res cyrvault\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{got}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(got.lines().any(|l| l == "restore"), "{got}");
    for (shell, needle) in [
        ("zsh", "#compdef cyrvault"),
        ("fish", "complete -c cyrvault"),
    ] {
        let text = cyrvault(&["completions", shell]);
        assert!(text.contains(needle), "{shell}: {text}");
        assert!(text.contains("fleet-status"), "{shell}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 15 item 3: the example alert rules are what doc/operations.md shows, and
/// `promtool test rules` shows each one firing on the figures it is about and only
/// then (packaging/prometheus/cyrvault-alerts.test.yml). That the rules name only
/// metrics a real run writes is checked by fleet::metrics.
#[test]
fn example_alert_rules_fire_as_documented() {
    let dir = repo("packaging/prometheus");
    let rules = std::fs::read_to_string(dir.join("cyrvault-alerts.yml")).unwrap();
    let doc = std::fs::read_to_string(repo("doc/operations.md")).unwrap();
    let shown = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n").next())
        .expect("doc/operations.md shows the alert rules in a ```yaml block");
    assert_eq!(
        shown, rules,
        "doc/operations.md and cyrvault-alerts.yml differ"
    );
    for args in [
        ["check", "rules", "cyrvault-alerts.yml"],
        ["test", "rules", "cyrvault-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian's prometheus package; scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
