//! doc/design.md's layer tables against the code: every module of every crate has a
//! row, each row's "may use" column names exactly the modules its files import
//! (`crate::x`, `cyrvault::x`, `cyrvault_host::x` in code; comments and the
//! `#[cfg(test)]` module at the end of a file do not count: tests do not ship; in the
//! host and testkit, the service's error is `cyrvault::error`, not their own
//! `error`), and the import graph has no cycles (none is left; one that must be
//! tolerated for a while would be listed below), so the table cannot drift from the
//! imports again (issue 15).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates, in the order their tables appear, with where their modules live and
/// the names other crates' code uses for them.
const CRATES: [(&str, &str); 3] = [
    ("cyrvault", "src"),
    ("cyrvault-host", "host/src"),
    ("cyrvault-testkit", "testkit/src"),
];

/// Cycles that exist and must go (issue 15): none is left since each layer of both
/// crates got its own error, converted at its edge. A new cycle fails the test, and so
/// does a listed one that is gone (delete it here).
const KNOWN_CYCLES: &[(&str, &str, &str)] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Code of a Rust file without comments and without its trailing test module.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        out.push_str(&without_strings_and_comment(t));
        out.push('\n');
    }
    out
}

/// One line of code with string literals emptied (log targets name modules too) and
/// a trailing `//` comment cut.
fn without_strings_and_comment(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == '/' && chars.peek() == Some(&'/') {
            break;
        } else {
            out.push(c);
        }
    }
    out
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names after `prefix::` in `code` (`crate::cyrus::x` -> cyrus), including
/// grouped `prefix::{a, b::c}`.
fn names_after(code: &str, prefix: &str, out: &mut BTreeSet<String>) {
    let pat = format!("{prefix}::");
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find(&pat) {
        let start = from + i;
        from = start + pat.len();
        // a whole word: not `xcrate::` or `cyrvault_host::` when looking for `cyrvault::`
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
}

/// A crate's top-level modules (files and directories under its src, minus lib.rs) and
/// `bin` for its binaries, each with the modules it uses. `Error`, `Result` and
/// `ErrorKind` at a crate root are the `error` module's.
fn imports(krate: &str, src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel.iter().next().unwrap().to_str().unwrap();
        if first == "lib.rs" {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_string();
        let code = code_of(&file);
        let mut used = BTreeSet::new();
        let own = if module == "bin" {
            // a binary names its library by the crate name
            krate.replace('-', "_")
        } else {
            "crate".to_string()
        };
        names_after(&code, &own, &mut used);
        // the crates below this one (a library cannot name itself by its crate name)
        let below: &[&str] = match krate {
            "cyrvault" => &["cyrvault"],
            "cyrvault-host" => &["cyrvault", "cyrvault_host"],
            _ => &["cyrvault", "cyrvault_host"],
        };
        let crate_error = |n: String| match n.as_str() {
            "Error" | "Result" | "ErrorKind" => "error".to_string(),
            _ => n,
        };
        let mut used: BTreeSet<String> = used.into_iter().map(crate_error).collect();
        for other in below {
            if *other != own && (module == "bin" || *other != krate.replace('-', "_")) {
                let mut theirs = BTreeSet::new();
                names_after(&code, other, &mut theirs);
                // another crate's modules are this one's re-exports (`cyrvault::cyrus`
                // is the host's `cyrus`), but its error is not this crate's `error`: the
                // service's error in the host is `cyrvault::error`, a layer below all of
                // the host's
                used.extend(theirs.into_iter().map(|n| match n.as_str() {
                    "Error" | "Result" | "ErrorKind" | "error" if *other == "cyrvault" => {
                        "cyrvault::error".to_string()
                    }
                    _ => crate_error(n),
                }));
            }
        }
        let used: BTreeSet<String> = used.into_iter().filter(|n| *n != module).collect();
        // a binary's own modules (crate::args in src/bin/...) are not layers
        let used = if module == "bin" {
            let bin_mods: BTreeSet<String> = std::fs::read_dir(src.join("bin"))
                .unwrap()
                .flat_map(|d| {
                    let d = d.unwrap().path();
                    if d.is_dir() {
                        std::fs::read_dir(d)
                            .unwrap()
                            .map(|f| f.unwrap().path())
                            .collect()
                    } else {
                        vec![d]
                    }
                })
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            used.into_iter().filter(|n| !bin_mods.contains(n)).collect()
        } else {
            used
        };
        graph.entry(module).or_default().extend(used);
    }
    graph
}

/// The layer table under `### \`krate\`` in doc/design.md: module -> may use.
fn table(doc: &str, krate: &str) -> Graph {
    let heading = format!("### `{krate}`");
    let Some(at) = doc.find(&heading) else {
        return Graph::new();
    };
    let mut rows = Graph::new();
    let mut seen_table = false;
    for line in doc[at + heading.len()..].lines() {
        if line.starts_with('#') {
            break;
        }
        if !line.starts_with('|') {
            if seen_table {
                break;
            }
            continue;
        }
        seen_table = true;
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(module) = cells.first().and_then(|c| c.strip_prefix('`')) else {
            continue; // header and separator rows
        };
        let module = module
            .trim_end_matches('`')
            .trim_end_matches('/')
            .to_string();
        let may_use = cells.last().unwrap();
        let mut uses = BTreeSet::new();
        for (i, part) in may_use.split('`').enumerate() {
            if i % 2 == 1 {
                let name = if part.starts_with("cyrvault::error") {
                    "cyrvault::error"
                } else {
                    part.split("::").next().unwrap().trim_end_matches('/')
                };
                uses.insert(name.to_string());
            }
        }
        rows.insert(module, uses);
    }
    rows
}

/// Cycles of `graph` (restricted to its own modules), each as the sorted module list of
/// a strongly connected component with more than one module.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = graph.keys().collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for m in graph.get(&n).into_iter().flatten() {
                if graph.contains_key(m) && seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for n in &nodes {
        let comp: Vec<String> = nodes
            .iter()
            .filter(|m| *m == n || (reachable[*n].contains(**m) && reachable[*m].contains(*n)))
            .map(|m| (*m).clone())
            .collect();
        if comp.len() > 1 && !out.contains(&comp) {
            out.push(comp);
        }
    }
    out
}

#[test]
fn design_tables_match_the_imports_and_there_are_no_cycles() {
    let doc = std::fs::read_to_string(root().join("doc/design.md")).unwrap();
    let mut problems = Vec::new();
    let mut found_cycles = Vec::new();
    let mut actual = String::new();
    for (krate, src) in CRATES {
        let graph = imports(krate, &root().join(src));
        let rows = table(&doc, krate);
        if rows.is_empty() {
            problems.push(format!("doc/design.md has no table under ### `{krate}`"));
        }
        actual.push_str(&format!("{krate}:\n"));
        for (module, used) in &graph {
            let used: Vec<String> = used.iter().map(|u| format!("`{u}`")).collect();
            actual.push_str(&format!("  `{module}` uses {}\n", used.join(", ")));
        }
        for (module, used) in &graph {
            let Some(allowed) = rows.get(module) else {
                problems.push(format!(
                    "{krate}: module `{module}` has no row in doc/design.md"
                ));
                continue;
            };
            for u in used.difference(allowed) {
                problems.push(format!(
                    "{krate}: `{module}` uses `{u}`, which its row does not list"
                ));
            }
            for a in allowed.difference(used) {
                problems.push(format!(
                    "{krate}: `{module}`'s row lists `{a}`, which it does not use"
                ));
            }
        }
        for module in rows.keys() {
            if !graph.contains_key(module) {
                problems.push(format!(
                    "{krate}: doc/design.md has a row for `{module}`, which does not exist"
                ));
            }
        }
        for c in cycles(&graph) {
            found_cycles.push((krate, c.join(" ")));
        }
    }
    for (krate, cycle) in &found_cycles {
        if !KNOWN_CYCLES
            .iter()
            .any(|(k, _, c)| k == krate && c == cycle)
        {
            problems.push(format!("{krate}: import cycle among {cycle}"));
        }
    }
    for (krate, why, cycle) in KNOWN_CYCLES {
        if !found_cycles.iter().any(|(k, c)| k == krate && c == cycle) {
            problems.push(format!(
                "{krate}: the known cycle {cycle} ({why}) is gone: delete it from KNOWN_CYCLES"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "doc/design.md vs the imports:\n{}\n\nwhat the code imports:\n{actual}",
        problems.join("\n")
    );
}
