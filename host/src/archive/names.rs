//! Entry naming: the paths of tar entries inside an archive (see `doc/archive-format.md`).
//!
//! ```text
//! cyrvault/FORMAT                         format version marker (first entry of a new archive)
//! messages/<g0g1>/<guid40>                raw message bytes, stored once per archive
//! folders/<uniqueid>/<run>/<file>         a folder's metadata snapshot in a run
//! user/<run>/<item>                       seen, subscriptions, sieve/<name>, sieve.active
//! runs/<run>.json                         run manifest, written last: commits the run
//! cyrvault/GENERATION                     the archive's generation (rewritten archives)
//! retention/<seq>.json                    a retention event: hold, release, erase, prune
//! ```
//!
//! Names are built here and nowhere else; `parse_entry_name` maps them back for reindex.
//! Every name is relative, has no `.`/`..`/empty components, and is at most
//! [`MAX_NAME`] bytes, so `tar -x` puts every entry under the current directory.

use super::error::ArchiveError;
use crate::cyrus::Guid;

/// The format marker entry.
pub const FORMAT_ENTRY: &str = "cyrvault/FORMAT";

/// The generation marker: second entry of the first member of an archive that
/// retention rewrote (`doc/retention.md`); its catalog records the same line.
pub const GENERATION_ENTRY: &str = "cyrvault/GENERATION";

/// Longest entry name accepted (GNU tar and libarchive handle longer via pax, but a
/// bound keeps every name readable on every filesystem we restore to).
pub const MAX_NAME: usize = 1024;

/// Longest path component: Linux's NAME_MAX, so `tar -x` can create every entry.
pub const MAX_COMPONENT: usize = 255;

/// What an entry name says it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryName {
    /// `cyrvault/FORMAT`.
    Format,
    /// `messages/<g0g1>/<guid40>`.
    Message(Guid),
    /// `folders/<uniqueid>/<run>/<file>`.
    Folder {
        uniqueid: String,
        run: String,
        file: String,
    },
    /// `user/<run>/<item>` (item may contain one `/`, as in `sieve/<name>`).
    User { run: String, item: String },
    /// `runs/<run>.json`.
    RunManifest { run: String },
    /// `cyrvault/GENERATION`.
    Generation,
    /// `retention/<seq>.json`: a hold, release, erasure or prune record.
    Retention { seq: String },
    /// Anything else (written by a newer version): kept, not interpreted.
    Other,
}

/// The entry name of a message: `messages/<first two hex digits>/<40 hex digits>`.
pub fn message_entry(guid: &Guid) -> String {
    let hex = guid.to_hex();
    let mut name = String::with_capacity(MESSAGE_ENTRY_LEN);
    name.push_str("messages/");
    name.push_str(&hex[..2]);
    name.push('/');
    name.push_str(&hex);
    name
}

/// The length of every [`message_entry`] name.
const MESSAGE_ENTRY_LEN: usize = "messages/".len() + 2 + 1 + 40;

/// The GUID a `messages/<g0g1>/<guid>` name stands for, if it is exactly such a name
/// (what [`parse_entry_name`] returns as [`EntryName::Message`]), without allocating:
/// checked once per message entry by `verify` and `reindex`.
pub fn message_entry_guid(name: &str) -> Option<Guid> {
    if name.len() != MESSAGE_ENTRY_LEN {
        return None;
    }
    let rest = name.strip_prefix("messages/")?;
    let (shard, hex) = (rest.get(..2)?, rest.get(3..)?);
    if rest.as_bytes().get(2) != Some(&b'/') || hex.get(..2) != Some(shard) {
        return None;
    }
    Guid::from_lower_hex(hex)
}

/// A run id is a decimal sequence number (1, 2, ...) written with at least 6 digits,
/// so that names sort in run order: `000001`.
pub fn valid_run_id(run: &str) -> bool {
    (6..=20).contains(&run.len()) && run.bytes().all(|b| b.is_ascii_digit())
}

/// Format a run sequence number as a run id.
pub fn run_id(seq: u64) -> String {
    format!("{seq:06}")
}

fn valid_uniqueid(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Percent-encode one path component so any string (a sieve script name, say) becomes
/// a safe file name: bytes outside `[A-Za-z0-9_-]`, and a leading `.`, become `%XX`.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverse of [`encode_component`]; `None` if the escapes are malformed.
pub fn decode_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `folders/<uniqueid>/<run>/<file>`: `file` is `cyrus.header`, `cyrus.index`,
/// `cyrus.annotations` (raw, as the service sent them) or `state.json`.
pub fn folder_entry(uniqueid: &str, run: &str, file: &str) -> Result<String, ArchiveError> {
    let bad = |why| ArchiveError::BadName {
        name: format!("folders/{uniqueid}/{run}/{file}"),
        why,
    };
    if !valid_uniqueid(uniqueid) {
        return Err(bad("uniqueid must be 1-64 of [A-Za-z0-9-]"));
    }
    if !valid_run_id(run) {
        return Err(bad("run id must be 6-20 decimal digits"));
    }
    Ok(format!(
        "folders/{uniqueid}/{run}/{}",
        encode_component(file)
    ))
}

/// The entry a user file of `kind` stored at run `snapshot_run` has: the one mapping
/// from the catalog's and the manifest's kinds to names (backup, verify, reindex,
/// retention).
pub fn user_file_entry(
    snapshot_run: u64,
    kind: crate::model::UserFileKind,
    name: &str,
) -> Result<String, ArchiveError> {
    use crate::model::UserFileKind;
    let run = run_id(snapshot_run);
    match kind {
        UserFileKind::Seen => user_entry(&run, "seen", None),
        UserFileKind::Subs => user_entry(&run, "subscriptions", None),
        UserFileKind::Sieve => user_entry(&run, "sieve", Some(name)),
        UserFileKind::Quota => user_entry(&run, "quota", None),
    }
}

/// `user/<run>/<item>`: `seen`, `subscriptions`, `sieve.active`, or a sieve script
/// (`sieve` with `Some(script name)`, stored as `sieve/<encoded name>`).
pub fn user_entry(run: &str, item: &str, script: Option<&str>) -> Result<String, ArchiveError> {
    if !valid_run_id(run) {
        return Err(ArchiveError::BadName {
            name: format!("user/{run}/{item}"),
            why: "run id must be 6-20 decimal digits",
        });
    }
    Ok(match script {
        Some(name) => format!(
            "user/{run}/{}/{}",
            encode_component(item),
            encode_component(name)
        ),
        None => format!("user/{run}/{}", encode_component(item)),
    })
}

/// `runs/<run>.json`: the run manifest; its presence commits the run.
pub fn run_manifest_entry(run: &str) -> Result<String, ArchiveError> {
    if !valid_run_id(run) {
        return Err(ArchiveError::BadName {
            name: format!("runs/{run}.json"),
            why: "run id must be 6-20 decimal digits",
        });
    }
    Ok(format!("runs/{run}.json"))
}

/// `retention/<seq>.json`: a retention event (`doc/retention.md`), numbered 1, 2, ...
/// with at least six digits.
pub fn retention_entry(seq: u64) -> String {
    format!("retention/{}.json", run_id(seq))
}

/// Check a name any entry must satisfy (the writer calls this for every entry).
pub(crate) fn check_name(name: &str) -> Result<(), ArchiveError> {
    let bad = |why| {
        Err(ArchiveError::BadName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME {
        return bad("must be 1-1024 bytes");
    }
    if name.starts_with('/') {
        return bad("must be relative");
    }
    if name.bytes().any(|b| b == 0 || b == b'\\' || b < 0x20) {
        return bad("contains a control byte or backslash");
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("has an empty, '.' or '..' component");
    }
    if name.split('/').any(|c| c.len() > MAX_COMPONENT) {
        return bad("has a component longer than 255 bytes (tar -x could not create it)");
    }
    Ok(())
}

/// Map an entry name back to what it holds.
pub fn parse_entry_name(name: &str) -> EntryName {
    // The common case first, without splitting the name: a message.
    if let Some(g) = message_entry_guid(name) {
        return EntryName::Message(g);
    }
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["cyrvault", "FORMAT"] => EntryName::Format,
        ["cyrvault", "GENERATION"] => EntryName::Generation,
        ["retention", file] => match file.strip_suffix(".json") {
            Some(seq) if valid_run_id(seq) => EntryName::Retention {
                seq: seq.to_string(),
            },
            _ => EntryName::Other,
        },
        // Any other `messages/...` name is not one the writer makes.
        ["messages", ..] => EntryName::Other,
        ["folders", uid, run, file] if valid_uniqueid(uid) && valid_run_id(run) => {
            match decode_component(file) {
                Some(file) => EntryName::Folder {
                    uniqueid: uid.to_string(),
                    run: run.to_string(),
                    file,
                },
                None => EntryName::Other,
            }
        }
        ["user", run, rest @ ..] if valid_run_id(run) && (1..=2).contains(&rest.len()) => {
            let item: Option<Vec<String>> = rest.iter().map(|c| decode_component(c)).collect();
            match item {
                Some(item) => EntryName::User {
                    run: run.to_string(),
                    item: item.join("/"),
                },
                None => EntryName::Other,
            }
        }
        ["runs", file] => match file.strip_suffix(".json") {
            Some(run) if valid_run_id(run) => EntryName::RunManifest {
                run: run.to_string(),
            },
            _ => EntryName::Other,
        },
        _ => EntryName::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let g = Guid::of(b"hello");
        let m = message_entry(&g);
        assert_eq!(m.len(), "messages/".len() + 3 + 40);
        assert_eq!(parse_entry_name(&m), EntryName::Message(g));
        let f = folder_entry("4c1d2e3f-aa", "000007", "cyrus.index").unwrap();
        assert_eq!(f, "folders/4c1d2e3f-aa/000007/cyrus.index");
        assert_eq!(
            parse_entry_name(&f),
            EntryName::Folder {
                uniqueid: "4c1d2e3f-aa".into(),
                run: "000007".into(),
                file: "cyrus.index".into()
            }
        );
        let s = user_entry("000007", "sieve", Some("../vacation é")).unwrap();
        assert_eq!(s, "user/000007/sieve/%2E.%2Fvacation%20%C3%A9");
        check_name(&s).unwrap();
        assert_eq!(
            parse_entry_name(&s),
            EntryName::User {
                run: "000007".into(),
                item: "sieve/../vacation é".into()
            }
        );
        assert_eq!(
            parse_entry_name(&run_manifest_entry("000012").unwrap()),
            EntryName::RunManifest {
                run: "000012".into()
            }
        );
        assert_eq!(parse_entry_name(FORMAT_ENTRY), EntryName::Format);
        assert_eq!(parse_entry_name(GENERATION_ENTRY), EntryName::Generation);
        assert_eq!(
            parse_entry_name(&retention_entry(4)),
            EntryName::Retention {
                seq: "000004".into()
            }
        );
        assert_eq!(parse_entry_name("messages/aa/zz"), EntryName::Other);
        assert_eq!(run_id(3), "000003");
    }

    #[test]
    fn message_names_are_parsed_strictly() {
        let g = Guid::of(b"hello");
        let hex = g.to_hex();
        assert_eq!(message_entry_guid(&message_entry(&g)), Some(g));
        // Only the spelling the writer makes: lower case, the right shard, one slash.
        for bad in [
            format!("messages/{}/{}", &hex[..2], hex.to_uppercase()),
            format!(
                "messages/{}/{}",
                hex[..2].to_uppercase(),
                hex.to_uppercase()
            ),
            format!("messages/00/{hex}"),
            format!("messages/{}/{}x", &hex[..2], &hex[..39]),
            format!("messages/{}/{}", &hex[..2], &hex[..39]),
            format!("messages/{}x{}", &hex[..2], hex),
            format!("message/{}/{}/", &hex[..2], hex),
            format!("messages/{}//{}", &hex[..2], &hex[1..]),
        ] {
            assert_eq!(message_entry_guid(&bad), None, "{bad}");
            assert_eq!(parse_entry_name(&bad), EntryName::Other, "{bad}");
        }
    }

    #[test]
    fn bad_names_refused() {
        for n in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a\0b", "a\\b"] {
            assert!(check_name(n).is_err(), "{n:?}");
        }
        assert!(check_name(&"x".repeat(256)).is_err());
        check_name(&format!("{}/{}", "x".repeat(255), "y".repeat(255))).unwrap();
        assert!(folder_entry("a/b", "000001", "x").is_err());
        assert!(folder_entry("ab", "1", "x").is_err());
        assert!(run_manifest_entry("12ab56").is_err());
    }
}
