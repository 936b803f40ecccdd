//! Where Cyrus 3.6 keeps a mailbox's files, its lock files and a user's per-user
//! files, computed from an [`ImapdConf`] and the mailboxes.db facts (partition,
//! uniqueid, legacy-dirs flag). Pure: no file is touched.
//!
//! Mirrors `imap/mboxname.c` (`mbname_from_intname`, `mboxname_hash`,
//! `mboxname_id_hash`, `mboxname_datapath`, `mboxname_metapath`,
//! `mboxname_archivepath`, `mboxname_lockpath`, `mboxname_conf_getpath`),
//! `lib/util.c` (`dir_hash_c`) and `imap/user.c` (`user_sieve_path`,
//! `_namelock_name_from_userid`) at cyrus-imapd-3.6.1 (identical through 3.13
//! but for the user namespace lock name, which changed in 3.12); checked against
//! `mbpath -j` by `tests/cyrus_paths.rs`. See `doc/cyrus-files.md` ("paths").
//!
//! Every name that becomes a path component is checked first: a component that
//! is empty, `.`, `..` or holds `/` or NUL is refused, so a hostile mailbox name
//! or userid can never point outside the partition or lock root.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::cyrus::config::{ConfigError, ImapdConf, MetaFiles};
use crate::cyrus::version::UserLockNaming;

/// Results of this module: a path, or why it cannot be made.
type Result<T, E = PathError> = std::result::Result<T, E>;
use PathError as Error;

/// Why a Cyrus path cannot be made. Converted to the crate's error at its edge
/// (`Error::Refused`, `Error::Config`), so this layer does not depend on it.
#[derive(Debug)]
pub enum PathError {
    /// The name would not map to a safe path, or lacks what its path needs.
    Refused(String),
    /// imapd.conf lacks a setting the path needs.
    Config(ConfigError),
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Refused(m) => write!(f, "refused: {m}"),
            PathError::Config(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PathError {}

/// Cyrus's one-letter directory hash (`dir_hash_c`).
///
/// Without `full`: the lowercased first byte if it is an ASCII letter, else `q`.
/// With `full` (`fulldirhash: yes`): a shift/xor hash of the bytes before the first
/// `.`, mapped to `A`..`W`.
pub fn dir_hash_c(name: &str, full: bool) -> char {
    if full {
        let mut n: u32 = 0;
        for &b in name.as_bytes().iter().take_while(|&&b| b != b'.') {
            n = ((n << 3) ^ (n >> 5)) ^ u32::from(b);
        }
        // n % 23 < 23, so this stays within 'A'..='W'.
        char::from(b'A' + (n % 23) as u8)
    } else {
        match name.as_bytes().first() {
            Some(&b) if b.is_ascii_alphabetic() => char::from(b.to_ascii_lowercase()),
            _ => 'q',
        }
    }
}

/// An internal mailbox name split the way Cyrus's `mbname_t` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbName {
    /// The domain (`domain!...`), unless it is `defaultdomain`.
    pub domain: Option<String>,
    /// The user's local part for `user.<localpart>...` names (with real dots).
    pub localpart: Option<String>,
    /// The remaining folder components, `^` already turned back into `.`.
    pub boxes: Vec<String>,
    /// For `<deletedprefix>.….<HEX>` names: the deletion time (hex in the name).
    pub deleted: Option<u64>,
}

impl MbName {
    /// `localpart[@domain]`, for user mailboxes.
    pub fn userid(&self) -> Option<String> {
        let lp = self.localpart.as_ref()?;
        Some(match &self.domain {
            Some(d) => format!("{lp}@{d}"),
            None => lp.clone(),
        })
    }

    /// The directory components in order, as `mboxname_hash` lists them:
    /// `[deletedprefix,] [user, localpart,] boxes… [, HEX]`.
    fn components(&self, deletedprefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.deleted.is_some() {
            out.push(deletedprefix.to_string());
        }
        if let Some(lp) = &self.localpart {
            out.push("user".to_string());
            out.push(lp.clone());
        }
        out.extend(self.boxes.iter().cloned());
        if let Some(t) = self.deleted {
            // Cyrus prints `(unsigned)` time with %X.
            out.push(format!("{:X}", t as u32));
        }
        out
    }
}

/// Split an internal name (`[domain!]a.b.c`, `^` for a literal dot) like Cyrus's
/// `mbname_from_intname`.
pub fn internal_to_components(conf: &ImapdConf, internal_name: &str) -> MbName {
    let mut m = MbName {
        domain: None,
        localpart: None,
        boxes: Vec::new(),
        deleted: None,
    };
    if internal_name.is_empty() {
        return m;
    }
    let mut rest = internal_name;
    if let Some(i) = internal_name.find('!') {
        let d = &internal_name[..i];
        if Some(d) != conf.defaultdomain() {
            m.domain = Some(d.to_string());
        }
        rest = &internal_name[i + 1..];
    }
    let mut boxes: Vec<String> = rest.split('.').map(|s| s.replace('^', ".")).collect();
    if boxes.len() > 2 && boxes[0] == conf.deletedprefix() {
        boxes.remove(0);
        let hex = boxes.pop().unwrap_or_default();
        // strtoul(…, 16): leading hex digits (after an optional 0x); 0 means "not
        // deleted" and Cyrus then drops both the prefix and the stamp, as we do.
        let h = hex
            .strip_prefix("0x")
            .or_else(|| hex.strip_prefix("0X"))
            .unwrap_or(&hex);
        let digits: String = h.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        let t = u64::from_str_radix(&digits, 16).unwrap_or(0);
        if t != 0 {
            m.deleted = Some(t);
        }
    }
    if boxes.len() > 1 && boxes[0] == "user" {
        boxes.remove(0);
        m.localpart = Some(boxes.remove(0));
    }
    m.boxes = boxes;
    m
}

/// A userid split like `mbname_from_userid` (last `@` separates the domain).
fn userid_to_mbname(conf: &ImapdConf, userid: &str) -> MbName {
    let (lp, dom) = match userid.rfind('@') {
        Some(i) => (&userid[..i], Some(&userid[i + 1..])),
        None => (userid, None),
    };
    MbName {
        domain: dom
            .filter(|d| Some(*d) != conf.defaultdomain())
            .map(str::to_string),
        localpart: Some(lp.to_string()),
        boxes: Vec::new(),
        deleted: None,
    }
}

fn unsafe_name(what: &str, name: &str) -> Error {
    Error::Refused(format!("{what} {name:?} cannot be mapped to a safe path"))
}

/// A path component must not be empty, `.`, `..`, or contain `/` or NUL.
fn check_component(what: &str, whole: &str, c: &str) -> Result<()> {
    if c.is_empty() || c == "." || c == ".." || c.contains('/') || c.contains('\0') {
        return Err(unsafe_name(what, whole));
    }
    Ok(())
}

/// `mboxname_hash(root, name)`: the legacy (name-based) directory.
fn name_hash(conf: &ImapdConf, root: &Path, internal_name: &str) -> Result<PathBuf> {
    let m = internal_to_components(conf, internal_name);
    let full = conf.fulldirhash();
    let mut p = root.to_path_buf();
    if let Some(d) = &m.domain {
        check_component("mailbox name", internal_name, d)?;
        p.push("domain");
        if conf.hashimapspool() {
            p.push(dir_hash_c(d, full).to_string());
        }
        p.push(d);
    }
    let comps = m.components(conf.deletedprefix());
    if conf.hashimapspool() && !comps.is_empty() {
        let idx = if comps.len() > 1 {
            &comps[1]
        } else {
            &comps[0]
        };
        p.push(dir_hash_c(idx, full).to_string());
    }
    for c in &comps {
        // `_append_intbuf` writes a literal `.` as `^`, so the folder Cyrus accepts
        // as `INBOX/..` lives in a directory `^^`: only the escaped form is a path
        // component, and only it must be safe.
        let escaped = c.replace('.', "^");
        check_component("mailbox name", internal_name, &escaped)?;
        p.push(escaped);
    }
    Ok(p)
}

/// `mboxname_id_hash(root, id)`: `<root>/uuid/<c0>/<c1>/<id>`.
fn id_hash(root: &Path, uniqueid: &str) -> Result<PathBuf> {
    check_component("uniqueid", uniqueid, uniqueid)?;
    let mut chars = uniqueid.chars();
    let (Some(c0), Some(c1)) = (chars.next(), chars.next()) else {
        return Err(unsafe_name("uniqueid", uniqueid));
    };
    if c0 == '.' || c1 == '.' {
        // "./" or "../" style hash dirs would be unsafe; real uniqueids are hex/UUIDs.
        return Err(unsafe_name("uniqueid", uniqueid));
    }
    Ok(root
        .join("uuid")
        .join(c0.to_string())
        .join(c1.to_string())
        .join(uniqueid))
}

/// The mailbox directory under `root`: by uniqueid, or by name when `legacy`.
fn mailbox_dir_under(
    conf: &ImapdConf,
    root: &Path,
    internal_name: &str,
    uniqueid: Option<&str>,
    legacy: bool,
) -> Result<PathBuf> {
    if legacy {
        return name_hash(conf, root, internal_name);
    }
    match uniqueid {
        Some(id) => id_hash(root, id),
        None => Err(Error::Refused(format!(
            "mailbox {internal_name} has no uniqueid and is not a legacy-dirs mailbox"
        ))),
    }
}

fn missing_partition(conf: &ImapdConf, option: String, name: &str) -> Error {
    Error::Config(ConfigError::new(
        conf.file(),
        &option,
        format!("not set (needed for mailbox {name})"),
    ))
}

/// The data (spool) directory of a mailbox: `partition-<p>` + `uuid/…` (§6.2), or
/// the legacy hashed name path when `legacy` (mbtype flag `l`, §6.3).
pub fn mailbox_data_dir(
    conf: &ImapdConf,
    partition: &str,
    internal_name: &str,
    uniqueid: Option<&str>,
    legacy: bool,
) -> Result<PathBuf> {
    let root = conf
        .partition_dir(partition)
        .ok_or_else(|| missing_partition(conf, format!("partition-{partition}"), internal_name))?;
    mailbox_dir_under(conf, &root, internal_name, uniqueid, legacy)
}

/// Where archived messages of a mailbox live: under `archivepartition-<p>` when
/// `archive_enabled` and set, else the same as the data directory.
pub fn mailbox_archive_dir(
    conf: &ImapdConf,
    partition: &str,
    internal_name: &str,
    uniqueid: Option<&str>,
    legacy: bool,
) -> Result<PathBuf> {
    let root = conf
        .archivepartition_dir(partition)
        .or_else(|| conf.partition_dir(partition))
        .ok_or_else(|| missing_partition(conf, format!("partition-{partition}"), internal_name))?;
    mailbox_dir_under(conf, &root, internal_name, uniqueid, legacy)
}

/// A per-mailbox metadata file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaFile {
    /// `cyrus.header`.
    Header,
    /// `cyrus.index`.
    Index,
    /// `cyrus.cache`.
    Cache,
    /// `cyrus.squat` (SQUAT search index).
    Squat,
    /// `cyrus.annotations` (per-message annotations, twoskip).
    Annotations,
    /// The cache of archived messages (`cyrus.cache` under the archive root).
    ArchiveCache,
}

impl MetaFile {
    /// The file name inside the mailbox directory.
    pub fn file_name(self) -> &'static str {
        match self {
            MetaFile::Header => "cyrus.header",
            MetaFile::Index => "cyrus.index",
            MetaFile::Cache | MetaFile::ArchiveCache => "cyrus.cache",
            MetaFile::Squat => "cyrus.squat",
            MetaFile::Annotations => "cyrus.annotations",
        }
    }

    /// The `metadir-<kind>-<partition>` kind (annotations follow the index).
    fn metadir_kind(self) -> &'static str {
        match self {
            MetaFile::Header => "header",
            MetaFile::Index | MetaFile::Annotations => "index",
            MetaFile::Cache => "cache",
            MetaFile::Squat => "squat",
            MetaFile::ArchiveCache => "archivecache",
        }
    }

    fn flag(self) -> MetaFiles {
        match self {
            MetaFile::Header => MetaFiles::HEADER,
            MetaFile::Index => MetaFiles::INDEX,
            MetaFile::Cache => MetaFiles::CACHE,
            MetaFile::Squat => MetaFiles::SQUAT,
            MetaFile::Annotations => MetaFiles::ANNOTATIONS,
            MetaFile::ArchiveCache => MetaFiles::ARCHIVECACHE,
        }
    }
}

/// The full path of one meta file (`mboxname_metapath`, §5): the root is the first
/// of `metadir-<kind>-<p>`; `metapartition-<p>` if `metapartition_files` names the
/// file; the archive partition (archive cache only); `partition-<p>`.
pub fn mailbox_meta_path(
    conf: &ImapdConf,
    partition: &str,
    internal_name: &str,
    uniqueid: Option<&str>,
    legacy: bool,
    file: MetaFile,
) -> Result<PathBuf> {
    let mut root = conf.metadir(file.metadir_kind(), partition);
    if root.is_none() && conf.metapartition_files().contains(file.flag()) {
        root = conf.metapartition_dir(partition);
    }
    if root.is_none() && file == MetaFile::ArchiveCache {
        root = conf.archivepartition_dir(partition);
    }
    let root = match root.or_else(|| conf.partition_dir(partition)) {
        Some(r) => r,
        None => {
            return Err(missing_partition(
                conf,
                format!("partition-{partition}"),
                internal_name,
            ));
        }
    };
    Ok(mailbox_dir_under(conf, &root, internal_name, uniqueid, legacy)?.join(file.file_name()))
}

/// A message file: `<dir>/<uid>.`.
pub fn message_path(dir: &Path, uid: u32) -> PathBuf {
    dir.join(format!("{uid}."))
}

/// The lock file for a lock name (§6.7): the name is hashed like a legacy mailbox
/// name under `mboxname_lockpath`, plus `.lock`.
pub fn lock_path(conf: &ImapdConf, lockname: &str) -> Result<PathBuf> {
    let mut p = name_hash(conf, &conf.mboxname_lockpath(), lockname)?;
    let mut last = p
        .file_name()
        .map(|n| n.to_os_string())
        .ok_or_else(|| unsafe_name("lock name", lockname))?;
    last.push(".lock");
    p.set_file_name(last);
    Ok(p)
}

/// The user namespace lock name up to Cyrus 3.10: `*U*` + userid with `.`
/// written as `^` (`_namelock_name_from_userid`, 3.6.1 to 3.10).
pub fn user_namespace_lockname(userid: &str) -> String {
    format!("*U*{}", userid.replace('.', "^"))
}

/// The user namespace lock name from Cyrus 3.12 on: `*U*` + the internal name of
/// the user's INBOX (`mboxname_user_mbox`): `user.` + the localpart with `.` as
/// `^`, after `<domain>!` when the userid has a domain other than
/// `defaultdomain` (the last `@` splits, as `mbname_from_userid` does).
pub fn user_namespace_lockname_inbox(conf: &ImapdConf, userid: &str) -> String {
    let (local, domain) = match userid.rfind('@') {
        Some(i) => (&userid[..i], Some(&userid[i + 1..])),
        None => (userid, None),
    };
    let domain = domain.filter(|d| Some(*d) != conf.defaultdomain());
    match domain {
        Some(d) => format!("*U*{d}!user.{}", local.replace('.', "^")),
        None => format!("*U*user.{}", local.replace('.', "^")),
    }
}

/// The user namespace lock name(s) under `naming`: one name, or for
/// [`UserLockNaming::Both`] the 3.6 name then the 3.12 one.
pub fn user_namespace_locknames(
    conf: &ImapdConf,
    userid: &str,
    naming: UserLockNaming,
) -> Vec<String> {
    match naming {
        UserLockNaming::UserId => vec![user_namespace_lockname(userid)],
        UserLockNaming::Inbox => vec![user_namespace_lockname_inbox(conf, userid)],
        UserLockNaming::Both => vec![
            user_namespace_lockname(userid),
            user_namespace_lockname_inbox(conf, userid),
        ],
    }
}

/// The mailbox name lock: the uniqueid, or the internal name for legacy mailboxes.
pub fn mailbox_lockname(
    internal_name: &str,
    uniqueid: Option<&str>,
    legacy: bool,
) -> Result<String> {
    if legacy {
        return Ok(internal_name.to_string());
    }
    uniqueid.map(str::to_string).ok_or_else(|| {
        Error::Refused(format!(
            "mailbox {internal_name} has no uniqueid and is not a legacy-dirs mailbox"
        ))
    })
}

/// A per-user file in `{configdirectory}` (§6.8), e.g. suffix `seen`, `sub`,
/// `counters`, `conversations`, `dav`, `mboxkey`, `xapianactive`.
/// UUID users: `user/uuid/<c0>/<c1>/<inbox-uniqueid>/<suffix>.db`; legacy users
/// (INBOX has `l`, or no uniqueid known): `[domain/<h>/<d>/]user/<h>/<local>.<suffix>`.
pub fn user_file_path(
    conf: &ImapdConf,
    userid: &str,
    inbox_uniqueid: Option<&str>,
    inbox_legacy: bool,
    suffix: &str,
) -> Result<PathBuf> {
    check_component("file suffix", suffix, suffix)?;
    let cd = conf.configdirectory();
    if let (false, Some(id)) = (inbox_legacy, inbox_uniqueid) {
        return Ok(id_hash(&cd.join("user"), id)?.join(format!("{suffix}.db")));
    }
    let m = userid_to_mbname(conf, userid);
    let full = conf.fulldirhash();
    let lp = m.localpart.unwrap_or_default();
    check_component("userid", userid, &lp)?;
    let mut p = cd.to_path_buf();
    if let Some(d) = &m.domain {
        check_component("userid", userid, d)?;
        p.push("domain");
        p.push(dir_hash_c(d, full).to_string());
        p.push(d);
    }
    p.push("user");
    p.push(dir_hash_c(&lp, full).to_string());
    p.push(format!("{lp}.{suffix}"));
    Ok(p)
}

/// The `quotalegacy` file of quota root `root` (an internal name, `user.bob` or
/// `domain!user.bob`): `<dir of quota_db_path>/quota/<h>/<root>`, with virtual domains
/// `<dir>/domain/<h>/<domain>/quota/<h>/<rest>` (`hash_quota` in
/// `lib/cyrusdb_quotalegacy.c`; `<h>` hashes the root after its first `.`).
pub fn quota_legacy_path(conf: &ImapdConf, root: &str) -> Result<PathBuf> {
    let db = conf.quota_db_path();
    let mut p = db.parent().map(Path::to_path_buf).unwrap_or_default();
    let full = conf.fulldirhash();
    let mut qr = root;
    let virt = conf.virtdomains() != crate::cyrus::config::VirtDomains::Off;
    if let (true, Some((dom, rest))) = (virt, root.split_once('!')) {
        check_component("quota root", root, dom)?;
        p.push("domain");
        p.push(dir_hash_c(dom, full).to_string());
        p.push(dom);
        qr = rest;
        if qr.is_empty() {
            p.push("quota");
            p.push("root");
            return Ok(p);
        }
    }
    check_component("quota root", root, qr)?;
    let idx = qr.split_once('.').map_or(qr, |(_, after)| after);
    p.push("quota");
    p.push(dir_hash_c(idx, full).to_string());
    p.push(qr);
    Ok(p)
}

/// A user's sieve script directory (§6.11, `user_sieve_path`): by INBOX uniqueid,
/// or for legacy users `<sievedir>/[domain/<h>/<d>/]<h>/<user>` (the user is the
/// local part with virtual domains, else the whole userid).
pub fn user_sieve_dir(
    conf: &ImapdConf,
    userid: &str,
    inbox_uniqueid: Option<&str>,
    inbox_legacy: bool,
) -> Result<PathBuf> {
    let sievedir = conf.sievedir();
    if let (false, Some(id)) = (inbox_legacy, inbox_uniqueid) {
        return id_hash(&sievedir, id);
    }
    // Cyrus undoes any ^ escaping in the userid first.
    let userid = userid.replace('^', ".");
    let m = userid_to_mbname(conf, &userid);
    let virt = conf.virtdomains() != crate::cyrus::config::VirtDomains::Off;
    let full = conf.fulldirhash();
    let mut p = sievedir;
    if let (true, Some(d)) = (virt, &m.domain) {
        check_component("userid", &userid, d)?;
        p.push("domain");
        p.push(dir_hash_c(d, full).to_string());
        p.push(d);
    }
    let who = if virt {
        m.localpart.clone().unwrap_or_default()
    } else {
        m.userid().unwrap_or_default()
    };
    check_component("userid", &userid, &who)?;
    p.push(dir_hash_c(&who, full).to_string());
    p.push(who);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cyrus::config::parse_imapd_conf;

    fn conf(extra: &str) -> ImapdConf {
        let t = format!(
            "configdirectory: /c\npartition-default: /p\nmetapartition-default: /m\n\
             sievedir: /s\n{extra}"
        );
        parse_imapd_conf(&t, "t", None).unwrap()
    }

    #[test]
    fn dir_hash() {
        assert_eq!(dir_hash_c("bob", false), 'b');
        assert_eq!(dir_hash_c("Bob", false), 'b');
        assert_eq!(dir_hash_c("5a1b", false), 'q');
        assert_eq!(dir_hash_c("*U*alice", false), 'q');
        assert_eq!(dir_hash_c("", false), 'q');
        // full: computed by hand. "a" -> 97 % 23 = 5 -> 'F'.
        assert_eq!(dir_hash_c("a", true), 'F');
        // "ab": n = ((97<<3) ^ (97>>5)) ^ 98 = 779 ^ 98 = 873; 873 % 23 = 22 -> 'W'.
        assert_eq!(dir_hash_c("ab", true), 'W');
        assert_eq!(dir_hash_c("ab.cd", true), 'W');
        assert_eq!(dir_hash_c("", true), 'A');
        // Long names wrap without overflow.
        let c = dir_hash_c(&"z".repeat(1000), true);
        assert!(c.is_ascii_uppercase() && c <= 'W');
    }

    #[test]
    fn components() {
        let c = conf("");
        let m = internal_to_components(&c, "user.bob^smith.Sent");
        assert_eq!(m.localpart.as_deref(), Some("bob.smith"));
        assert_eq!(m.boxes, vec!["Sent"]);
        let m = internal_to_components(&c, "DELETED.user.bob.Trash.5F3A0001");
        assert_eq!(m.deleted, Some(0x5F3A0001));
        assert_eq!(m.localpart.as_deref(), Some("bob"));
        assert_eq!(m.boxes, vec!["Trash"]);
        let m = internal_to_components(&c, "example.com!user.bob");
        assert_eq!(m.domain.as_deref(), Some("example.com"));
        assert_eq!(m.userid().as_deref(), Some("bob@example.com"));
        let m = internal_to_components(&c, "shared.folder");
        assert_eq!(m.localpart, None);
        assert_eq!(m.boxes, vec!["shared", "folder"]);
        let c2 = conf("defaultdomain: example.com\n");
        assert_eq!(
            internal_to_components(&c2, "example.com!user.bob").domain,
            None
        );
    }

    #[test]
    fn legacy_paths() {
        let c = conf("hashimapspool: yes\n");
        let d = |n: &str| mailbox_data_dir(&c, "default", n, None, true).unwrap();
        assert_eq!(d("user.bob"), PathBuf::from("/p/b/user/bob"));
        assert_eq!(d("user.bob.Sent"), PathBuf::from("/p/b/user/bob/Sent"));
        assert_eq!(d("user.bob^smith"), PathBuf::from("/p/b/user/bob^smith"));
        assert_eq!(d("shared.foo"), PathBuf::from("/p/f/shared/foo"));
        assert_eq!(d("top"), PathBuf::from("/p/t/top"));
        assert_eq!(
            d("DELETED.user.bob.5F3A0001"),
            PathBuf::from("/p/u/DELETED/user/bob/5F3A0001")
        );
        assert_eq!(
            d("ex.com!user.al"),
            PathBuf::from("/p/domain/e/ex.com/a/user/al")
        );
        let c = conf("");
        assert_eq!(
            mailbox_data_dir(&c, "default", "user.bob.Sent", None, true).unwrap(),
            PathBuf::from("/p/user/bob/Sent")
        );
    }

    #[test]
    fn uuid_paths_and_meta() {
        let c = conf("metapartition_files: header index\nmetadir-cache-default: /mc\n");
        let id = "5a1b2c3d-0000-4000-8000-00000000a11c";
        let d = mailbox_data_dir(&c, "default", "user.x", Some(id), false).unwrap();
        assert_eq!(d, PathBuf::from(format!("/p/uuid/5/a/{id}")));
        let mp = |f| mailbox_meta_path(&c, "default", "user.x", Some(id), false, f).unwrap();
        assert_eq!(
            mp(MetaFile::Header),
            PathBuf::from(format!("/m/uuid/5/a/{id}/cyrus.header"))
        );
        assert_eq!(
            mp(MetaFile::Index),
            PathBuf::from(format!("/m/uuid/5/a/{id}/cyrus.index"))
        );
        assert_eq!(
            mp(MetaFile::Cache),
            PathBuf::from(format!("/mc/uuid/5/a/{id}/cyrus.cache"))
        );
        assert_eq!(
            mp(MetaFile::Annotations),
            PathBuf::from(format!("/p/uuid/5/a/{id}/cyrus.annotations"))
        );
        assert_eq!(message_path(&d, 42), d.join("42."));
        assert!(mailbox_data_dir(&c, "default", "user.x", None, false).is_err());
        assert!(mailbox_data_dir(&c, "nope", "user.x", Some(id), false).is_err());
    }

    #[test]
    fn hostile_names_are_refused() {
        let c = conf("");
        for n in [
            "user.bob/../../etc",
            "user..x",
            "user.x.",
            "..",
            "user.x\0y",
        ] {
            assert!(
                mailbox_data_dir(&c, "default", n, None, true).is_err(),
                "{n:?}"
            );
        }
        // `INBOX/..` and `INBOX/dots/../up` (unixhierarchysep) are real folders; Cyrus
        // keeps them in `^^` directories, which are safe.
        let d = mailbox_data_dir(&c, "default", "user.bob.dots.^^.up", None, true).unwrap();
        assert!(d.ends_with("user/bob/dots/^^/up"), "{}", d.display());
        let d = mailbox_data_dir(&c, "default", "user.bob.^^", None, true).unwrap();
        assert!(d.ends_with("user/bob/^^"), "{}", d.display());
        for id in ["../etc", "a/b", "x", ".."] {
            assert!(
                mailbox_data_dir(&c, "default", "user.x", Some(id), false).is_err(),
                "{id}"
            );
        }
        assert!(user_file_path(&c, "../x", None, true, "seen").is_err());
        assert!(user_file_path(&c, "x", None, true, "../seen").is_err());
        assert!(lock_path(&c, "*U*a/b").is_err());
    }

    #[test]
    fn locks_and_user_files() {
        let c = conf("hashimapspool: yes\n");
        assert_eq!(
            user_namespace_lockname("bob.smith@ex.com"),
            "*U*bob^smith@ex^com"
        );
        assert_eq!(
            lock_path(&c, "*U*alice").unwrap(),
            PathBuf::from("/c/lock/q/*U*alice.lock")
        );
        // 3.12 on: the INBOX name, hashed like any mailbox name by mboxname_lockpath.
        let d = conf("hashimapspool: yes\ndefaultdomain: ex.org\n");
        let inbox = |u: &str| user_namespace_lockname_inbox(&d, u);
        assert_eq!(inbox("bob.smith"), "*U*user.bob^smith");
        assert_eq!(inbox("bob@ex.com"), "*U*ex.com!user.bob");
        assert_eq!(inbox("bob@ex.org"), "*U*user.bob");
        assert_eq!(inbox("a@b@ex.com"), "*U*ex.com!user.a@b");
        assert_eq!(
            lock_path(&d, &inbox("alice")).unwrap(),
            PathBuf::from("/c/lock/a/*U*user/alice.lock")
        );
        assert_eq!(
            lock_path(&d, &inbox("bob@ex.com")).unwrap(),
            PathBuf::from("/c/lock/domain/q/*U*ex.com/b/user/bob.lock")
        );
        assert_eq!(
            user_namespace_locknames(&d, "al.ice", UserLockNaming::Both),
            ["*U*al^ice", "*U*user.al^ice"]
        );
        assert_eq!(
            lock_path(&c, "user.bob").unwrap(),
            PathBuf::from("/c/lock/b/user/bob.lock")
        );
        assert_eq!(
            mailbox_lockname("user.bob", Some("id"), true).unwrap(),
            "user.bob"
        );
        assert_eq!(
            mailbox_lockname("user.bob", Some("id"), false).unwrap(),
            "id"
        );
        assert_eq!(
            user_file_path(&c, "bob", None, true, "seen").unwrap(),
            PathBuf::from("/c/user/b/bob.seen")
        );
        assert_eq!(
            user_file_path(&c, "bob@ex.com", None, true, "sub").unwrap(),
            PathBuf::from("/c/domain/e/ex.com/user/b/bob.sub")
        );
        assert_eq!(
            user_file_path(&c, "bob", Some("ab12"), false, "seen").unwrap(),
            PathBuf::from("/c/user/uuid/a/b/ab12/seen.db")
        );
        assert_eq!(
            user_sieve_dir(&c, "bob", None, true).unwrap(),
            PathBuf::from("/s/b/bob")
        );
        assert_eq!(
            user_sieve_dir(&c, "bob", Some("ab12"), false).unwrap(),
            PathBuf::from("/s/uuid/a/b/ab12")
        );
    }
}
