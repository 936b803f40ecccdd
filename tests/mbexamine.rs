//! Cyrus's `mbexamine` and `unexpunge -l` output, parsed: the oracle every integration
//! test compares our readers against (foundation, cyrus_index, catalog, backup, admin).
//!
//! mbexamine (`imap/mbexamine.c`, 3.6.1) shows only the non-expunged records,
//! prints times as decimal seconds, the four user-flag words last-first, and after
//! each record its cache items as ` Name>{len}` followed by len raw bytes (8-bit
//! included, so it is parsed as bytes). `unexpunge -l` lists the expunged records
//! with ctime() dates (run it with TZ=UTC).

use std::collections::BTreeMap;

use cyrvault::cyrus::Guid;
use cyrvault_host::model::{FolderState, RecordState};

/// One mailbox as mbexamine prints it.
#[derive(Debug, Default)]
pub struct Ex {
    pub path: String,
    pub acl: Vec<(String, String)>,
    pub uniqueid: String,
    pub user_flags: Vec<String>,
    /// Header numbers by our `IndexHeader` field name.
    pub header: BTreeMap<&'static str, u64>,
    pub records: Vec<ExRecord>,
}

/// One record: numeric fields by their mbexamine label (`UID:`, `INT_DATE:`, ...).
#[derive(Debug, Default)]
pub struct ExRecord {
    pub nums: BTreeMap<&'static str, u64>,
    pub sysflags: u32,
    pub guid: String,
    pub thrid: Option<u64>,
    pub internal_flags: Vec<String>,
    pub system_flags: Vec<String>,
    /// In word order (flag i is bit i%32 of word i/32), un-reversed.
    pub user_flags: [u32; 4],
    /// Cache items by name (`Envel`, `From`, `Subjct`, ...).
    pub cache: BTreeMap<String, Vec<u8>>,
}

/// The decimal number after `key` in `line` (after optional spaces and `(`).
pub fn num_after(line: &str, key: &str) -> u64 {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("{key} not in {line:?}"))
        + key.len();
    let digits: String = line[at..]
        .trim_start_matches([' ', '('])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key} in {line:?}"))
}

/// The whitespace-delimited word after `key` in `line`.
pub fn word_after<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("{key} not in {line:?}"))
        + key.len();
    line[at..].split_whitespace().next().unwrap_or("")
}

/// How a record's continuation lines start.
const CONTINUATION: &[u8] = b"      >";

/// The fields of a record's continuation lines, joined into one text. 3.6.1
/// prints `SYSFLAGS` and `CACHEVER`, and `INTERNALFLAGS` and `SYSTEMFLAGS`, on
/// one line each (missing newlines); 3.13 one field group per line.
struct RecordFields {
    sysflags: u32,
    guid: String,
    thrid: Option<u64>,
    internal_flags: Vec<String>,
    system_flags: Vec<String>,
    /// In word order (mbexamine prints word 3 first).
    user_flags: [u32; 4],
}

impl RecordFields {
    fn of(rest: &str) -> RecordFields {
        let between = |from: &str, to: &str| -> Vec<String> {
            let at = rest
                .find(from)
                .unwrap_or_else(|| panic!("{from} not in {rest:?}"))
                + from.len();
            let tail = &rest[at..];
            let end = tail.find(to).unwrap_or(tail.len());
            tail[..end].split_whitespace().map(str::to_string).collect()
        };
        let w: Vec<u32> = between("USERFLAGS:", ">")
            .iter()
            .map(|w| u32::from_str_radix(w, 16).unwrap())
            .collect();
        RecordFields {
            sysflags: u32::from_str_radix(word_after(rest, "SYSFLAGS:"), 16).unwrap(),
            guid: word_after(rest, "GUID:").to_string(),
            thrid: rest
                .contains("THRID:")
                .then(|| u64::from_str_radix(word_after(rest, "THRID:"), 16).unwrap()),
            internal_flags: between("INTERNALFLAGS:", ">"),
            system_flags: between("SYSTEMFLAGS:", ">"),
            user_flags: [w[3], w[2], w[1], w[0]],
        }
    }
}

/// Parse the raw stdout of `mbexamine <mailbox>` (3.6.1 or 3.13).
pub fn parse_mbexamine(out: &[u8]) -> Ex {
    let mut ex = Ex::default();
    let mut pos = 0usize;
    let line_at = |pos: &mut usize| -> Option<String> {
        if *pos >= out.len() {
            return None;
        }
        let end = out[*pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(out.len(), |i| *pos + i);
        let l = String::from_utf8_lossy(&out[*pos..end]).into_owned();
        *pos = end + 1;
        Some(l)
    };
    const HEADER_KEYS: &[(&str, &str, &str)] = &[
        ("  Generation Number:", "Number:", "generation_no"),
        ("  Minor Version:", "Version:", "minor_version"),
        ("  Header Size:", "Header Size:", "start_offset"),
        ("  Header Size:", "Record Size:", "record_size"),
        ("  Number of Messages:", "Messages:", "exists"),
        (
            "  Number of Messages:",
            "Mailbox Size:",
            "quota_mailbox_used",
        ),
        (
            "  Number of Messages:",
            "Annotations Size:",
            "quota_annot_used",
        ),
        ("  Last Append Date:", "Date:", "last_appenddate"),
        ("  UIDValidity:", "UIDValidity:", "uidvalidity"),
        ("  UIDValidity:", "Last UID:", "last_uid"),
        ("  Deleted:", "Deleted:", "deleted"),
        ("  Deleted:", "Answered:", "answered"),
        ("  Deleted:", "Flagged:", "flagged"),
        ("  Last POP3 Login:", "Login:", "pop3_last_login"),
        ("  Highest Mod Sequence:", "Sequence:", "highestmodseq"),
    ];
    while let Some(line) = line_at(&mut pos) {
        if let Some(p) = line.split_once("Path to mailbox: ") {
            ex.path = p.1.trim().to_string();
        } else if let Some(acl) = line.strip_prefix("  Mailbox ACL: ") {
            let parts: Vec<&str> = acl.split('\t').filter(|s| !s.is_empty()).collect();
            ex.acl = parts
                .chunks(2)
                .map(|c| (c[0].to_string(), c.get(1).unwrap_or(&"").to_string()))
                .collect();
        } else if let Some(id) = line.strip_prefix("  Unique ID: ") {
            ex.uniqueid = id.trim().to_string();
        } else if let Some(names) = line.strip_prefix("  User Flags: ") {
            if names.trim() != "[none]" {
                ex.user_flags = names.split_whitespace().map(str::to_string).collect();
            }
        } else if line.contains("> UID:") {
            let mut r = ExRecord::default();
            for k in ["UID:", "INT_DATE:", "SENTDATE:", "SAVEDATE:", "SIZE:"] {
                r.nums.insert(k, num_after(&line, k));
            }
            let mut rest = String::new();
            while out[pos..].starts_with(CONTINUATION) {
                rest.push_str(&line_at(&mut pos).unwrap());
                rest.push(' ');
            }
            let f = RecordFields::of(&rest);
            for (k, key) in [
                ("HDRSIZE:", "HDRSIZE:"),
                ("LASTUPD :", "LASTUPD :"),
                ("CACHEVER:", "CACHEVER:"),
                ("MODSEQ:", " MODSEQ:"),
            ] {
                r.nums.insert(k, num_after(&rest, key));
            }
            r.sysflags = f.sysflags;
            r.guid = f.guid;
            r.thrid = f.thrid;
            r.internal_flags = f.internal_flags;
            r.system_flags = f.system_flags;
            r.user_flags = f.user_flags;
            // cache items: " Name>{len}" + len bytes + "\n", as long as they come
            while out.get(pos) == Some(&b' ') {
                let Some(gt) = out[pos..].iter().position(|&b| b == b'>').map(|i| pos + i) else {
                    break;
                };
                if out.get(gt + 1) != Some(&b'{') {
                    break;
                }
                let close = out[gt..].iter().position(|&b| b == b'}').unwrap() + gt;
                let len: usize = std::str::from_utf8(&out[gt + 2..close])
                    .unwrap()
                    .parse()
                    .unwrap();
                let name = String::from_utf8_lossy(&out[pos + 1..gt]).into_owned();
                r.cache
                    .insert(name, out[close + 1..close + 1 + len].to_vec());
                pos = close + 1 + len;
                assert_eq!(out[pos], b'\n');
                pos += 1;
            }
            ex.records.push(r);
        } else {
            for &(prefix, key, field) in HEADER_KEYS {
                if line.starts_with(prefix) {
                    ex.header.insert(field, num_after(&line, key));
                }
            }
        }
    }
    ex
}

/// `unexpunge -l` (with TZ=UTC): (uid, size, sent, recv, expunged) per record.
pub fn parse_unexpunge(out: &str) -> Vec<[u64; 5]> {
    let mut v = Vec::new();
    let mut lines = out.lines();
    while let Some(l) = lines.next() {
        if let Some(uid) = l.strip_prefix("UID: ") {
            let mut get = |key: &str| {
                let l = lines.next().unwrap();
                l.trim_start().strip_prefix(key).unwrap().trim().to_string()
            };
            let size = get("Size:").parse().unwrap();
            let sent = ctime_secs(&get("Sent:"));
            let recv = ctime_secs(&get("Recv:"));
            let expg = ctime_secs(&get("Expg:"));
            v.push([uid.parse().unwrap(), size, sent, recv, expg]);
        }
    }
    v
}

/// "Wed Nov 15 00:00:00 2023" (UTC) -> epoch seconds.
pub fn ctime_secs(s: &str) -> u64 {
    let f: Vec<&str> = s.split_whitespace().collect();
    let m = cyrvault::time::MONTHS
        .iter()
        .position(|&x| x == f[1])
        .unwrap() as i64
        + 1;
    let (d, y): (i64, i64) = (f[2].parse().unwrap(), f[4].parse().unwrap());
    let hms: Vec<i64> = f[3].split(':').map(|x| x.parse().unwrap()).collect();
    cyrvault::time::unix_from_civil(y, m, d, hms[0], hms[1], hms[2]) as u64
}

/// The keywords set in a record's four user-flag words (flag i is bit i%32 of word
/// i/32), by the mailbox's `User Flags:` slot names, sorted.
pub fn keywords(names: &[String], uf: [u32; 4]) -> Vec<String> {
    let mut kw: Vec<String> = (0..128usize)
        .filter(|i| uf[i / 32] & (1 << (i % 32)) != 0)
        .map(|i| names[i].clone())
        .collect();
    kw.sort();
    kw
}

/// mbexamine's text as our model: the folder state (uidvalidity, highestmodseq, last_uid,
/// exists, generation, minor version) and the live records as `RecordState` (system
/// flags as Cyrus stores them, keywords from the `User Flags:` slot list). Line-based:
/// cache items are passed over, so lossily decoded text is fine.
pub fn record_states(text: &str) -> (FolderState, Vec<RecordState>) {
    let mut st = FolderState::default();
    let mut names: Vec<String> = Vec::new();
    let mut recs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(n) = line.strip_prefix("  User Flags:") {
            if n.trim() != "[none]" {
                names = n.split_whitespace().map(str::to_string).collect();
            }
        } else if line.starts_with("  Generation Number:") {
            st.generation_no = num_after(line, "Number:") as u32;
        } else if line.starts_with("  Minor Version:") {
            st.minor_version = num_after(line, "Version:") as u32;
        } else if line.starts_with("  Number of Messages:") {
            st.exists = num_after(line, "Messages:") as u32;
        } else if line.starts_with("  UIDValidity:") {
            st.uidvalidity = num_after(line, "UIDValidity:") as u32;
            st.last_uid = num_after(line, "Last UID:") as u32;
        } else if line.starts_with("  Highest Mod Sequence:") {
            st.highestmodseq = num_after(line, "Sequence:");
        } else if line.contains("> UID:") {
            let mut rest = String::new();
            while lines
                .peek()
                .is_some_and(|l| l.as_bytes().starts_with(CONTINUATION))
            {
                rest.push_str(lines.next().unwrap_or_default());
                rest.push(' ');
            }
            let f = RecordFields::of(&rest);
            recs.push(RecordState {
                uid: num_after(line, "UID:") as u32,
                guid: Guid::from_hex(&f.guid).unwrap(),
                system_flags: f.sysflags,
                keywords: keywords(&names, f.user_flags),
                internaldate: num_after(line, "INT_DATE:") as i64,
                size: num_after(line, "SIZE:"),
                modseq: num_after(&rest, " MODSEQ:"),
                last_updated: num_after(&rest, "LASTUPD :") as i64,
                savedate: num_after(line, "SAVEDATE:") as i64,
            });
        }
    }
    (st, recs)
}

#[test]
fn ctime_parser_is_right() {
    assert_eq!(ctime_secs("Thu Jan  1 00:00:00 1970"), 0);
    assert_eq!(ctime_secs("Mon Nov 20 12:00:00 2023"), 1_700_481_600);
}
