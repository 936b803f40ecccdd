//! Every location the catalog holds, read from `Catalog::dump_canonical` (the one
//! whole-catalog view it offers, so no SQL leaves `catalog/`): the members, each
//! message's location and first run, and the meta entries (manifests, folder
//! snapshots, user files). `verify` checks each against the archive; `show` counts
//! what each run added.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use crate::catalog::Catalog;
use crate::cyrus::Guid;
use crate::error::{Error, Result};
use crate::model::EntryLoc;

/// One value of the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    Null,
    Int(i64),
    Text(String),
}

/// A member row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemberRow {
    pub offset: u64,
    pub compressed_len: u64,
    pub uncompressed_len: u64,
    pub run: u64,
}

/// A message row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageRow {
    pub guid: Guid,
    pub loc: EntryLoc,
    pub first_run: u64,
}

/// A meta entry location and the entry name it must have in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetaRow {
    /// The archive entry name the catalog implies.
    pub name: String,
    pub loc: EntryLoc,
    /// The run whose state relies on it.
    pub run: u64,
}

/// The catalog's location tables.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    pub members: Vec<MemberRow>,
    pub messages: Vec<MessageRow>,
    pub meta: Vec<MetaRow>,
}

fn bad(what: impl Into<String>) -> Error {
    Error::Other(format!("reading the catalog dump: {}", what.into()))
}

/// Undo Rust's `{:?}` quoting of a string.
fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '0' => out.push('\0'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            'u' => {
                let rest: String = it.by_ref().take_while(|&c| c != '}').collect();
                let hex = rest.strip_prefix('{')?;
                out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

fn parse_val(s: &str) -> Option<Val> {
    if s == "NULL" {
        Some(Val::Null)
    } else if s.starts_with('"') {
        unquote(s).map(Val::Text)
    } else {
        s.parse().ok().map(Val::Int)
    }
}

/// The rows of each table, by table name.
fn tables(dump: &str) -> Result<HashMap<String, Vec<Vec<Val>>>> {
    let mut out: HashMap<String, Vec<Vec<Val>>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in dump.lines() {
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.split(']').next().unwrap_or("").to_string();
            out.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some(t) = &current else { continue };
        let row = line
            .split('\t')
            .map(parse_val)
            .collect::<Option<Vec<Val>>>()
            .ok_or_else(|| bad(format!("table {t}: row {line:?}")))?;
        out.entry(t.clone()).or_default().push(row);
    }
    Ok(out)
}

fn int(row: &[Val], i: usize) -> Option<u64> {
    match row.get(i)? {
        Val::Int(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

fn text(row: &[Val], i: usize) -> Option<&str> {
    match row.get(i)? {
        Val::Text(s) => Some(s),
        _ => None,
    }
}

fn loc_at(row: &[Val], i: usize) -> Option<EntryLoc> {
    Some(EntryLoc {
        member_offset: int(row, i)?,
        offset_in_member: int(row, i + 1)?,
        size: int(row, i + 2)?,
    })
}

/// The archive entry name of a user file, as the backup writes it
/// (`archive::user_entry`): `seen`, `subscriptions`, `sieve/<name>`, `quota`.
pub(crate) fn user_file_entry(snapshot_run: u64, kind: &str, name: &str) -> Option<String> {
    let run = crate::archive::run_id(snapshot_run);
    match kind {
        "seen" => crate::archive::user_entry(&run, "seen", None).ok(),
        "subs" => crate::archive::user_entry(&run, "subscriptions", None).ok(),
        "sieve" => crate::archive::user_entry(&run, "sieve", Some(name)).ok(),
        "quota" => crate::archive::user_entry(&run, "quota", None).ok(),
        _ => None,
    }
}

/// Read every location out of the catalog.
pub(crate) fn locations(cat: &Catalog) -> Result<Locations> {
    let t = tables(&cat.dump_canonical()?)?;
    let rows = |name: &str| t.get(name).map(Vec::as_slice).unwrap_or(&[]);
    let mut out = Locations::default();
    for r in rows("members") {
        // offset, compressed_len, uncompressed_len, run, crc32
        out.members.push(MemberRow {
            offset: int(r, 0).ok_or_else(|| bad("members row"))?,
            compressed_len: int(r, 1).ok_or_else(|| bad("members row"))?,
            uncompressed_len: int(r, 2).ok_or_else(|| bad("members row"))?,
            run: int(r, 3).ok_or_else(|| bad("members row"))?,
        });
    }
    for r in rows("messages") {
        // hex(guid), size, member_offset, offset_in_member, first_run
        let guid = text(r, 0)
            .and_then(Guid::from_hex)
            .ok_or_else(|| bad("messages guid"))?;
        let size = int(r, 1).ok_or_else(|| bad("messages row"))?;
        out.messages.push(MessageRow {
            guid,
            loc: EntryLoc {
                member_offset: int(r, 2).ok_or_else(|| bad("messages row"))?,
                offset_in_member: int(r, 3).ok_or_else(|| bad("messages row"))?,
                size,
            },
            first_run: int(r, 4).ok_or_else(|| bad("messages row"))?,
        });
    }
    for r in rows("runs") {
        // run, started, finished, server, user, tool_version, manifest_member,
        // manifest_offset, manifest_size, status
        let run = int(r, 0).ok_or_else(|| bad("runs row"))?;
        if let Some(loc) = loc_at(r, 6) {
            let name = crate::archive::run_manifest_entry(&crate::archive::run_id(run))
                .map_err(|e| bad(e.to_string()))?;
            out.meta.push(MetaRow { name, loc, run });
        }
    }
    for r in rows("folder_runs") {
        // uniqueid, run, snapshot_run, uidvalidity, highestmodseq, last_uid,
        // exists_count, state, then (member, offset, size) for header, index, annot,
        // state at 8, 11, 14, 17
        let uniqueid = text(r, 0).ok_or_else(|| bad("folder_runs row"))?;
        let run = int(r, 1).ok_or_else(|| bad("folder_runs row"))?;
        let snap = crate::archive::run_id(int(r, 2).ok_or_else(|| bad("folder_runs row"))?);
        for (i, file) in [
            (8, "cyrus.header"),
            (11, "cyrus.index"),
            (14, "cyrus.annotations"),
            (17, "state.json"),
        ] {
            if let Some(loc) = loc_at(r, i) {
                let name = crate::archive::folder_entry(uniqueid, &snap, file)
                    .map_err(|e| bad(e.to_string()))?;
                out.meta.push(MetaRow { name, loc, run });
            }
        }
    }
    for r in rows("user_files") {
        // run, snapshot_run, kind, name, active, member_offset, offset_in_member, size
        let run = int(r, 0).ok_or_else(|| bad("user_files row"))?;
        let snap = int(r, 1).ok_or_else(|| bad("user_files row"))?;
        let kind = text(r, 2).ok_or_else(|| bad("user_files row"))?;
        let name = text(r, 3).ok_or_else(|| bad("user_files row"))?;
        let loc = loc_at(r, 5).ok_or_else(|| bad("user_files row"))?;
        let entry = user_file_entry(snap, kind, name)
            .ok_or_else(|| bad(format!("user file {kind}/{name}")))?;
        out.meta.push(MetaRow {
            name: entry,
            loc,
            run,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_debug_quoting() {
        for s in [
            "plain",
            "tab\there",
            "quote\"s",
            "back\\slash",
            "é ünï",
            "nl\n\u{1}",
        ] {
            let q = format!("{s:?}");
            assert_eq!(unquote(&q).as_deref(), Some(s), "{q}");
        }
        assert_eq!(parse_val("NULL"), Some(Val::Null));
        assert_eq!(parse_val("-5"), Some(Val::Int(-5)));
        assert_eq!(parse_val("x"), None);
    }

    #[test]
    fn tables_are_split_by_header_lines() {
        let d = "schema_version 1\n[a] x, y\n1\t\"s\"\n[b] z\n[c] w\n2\n";
        let t = tables(d).unwrap();
        assert_eq!(t["a"], vec![vec![Val::Int(1), Val::Text("s".into())]]);
        assert!(t["b"].is_empty());
        assert_eq!(t["c"], vec![vec![Val::Int(2)]]);
    }
}
