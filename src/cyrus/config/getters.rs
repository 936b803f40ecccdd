//! Typed getters on [`ImapdConf`] with Cyrus 3.6's defaults (`lib/imapoptions`),
//! and the small types they return.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::options::{
    META_FILE_NAMES, bad, normalize_enum, parse_duration, parse_int, parse_switch,
};
use super::{ConfigError, Entry, ImapdConf};

/// Which per-mailbox files live on the meta partition (`metapartition_files`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetaFiles(u32);

impl MetaFiles {
    pub const HEADER: MetaFiles = MetaFiles(1 << 0);
    pub const INDEX: MetaFiles = MetaFiles(1 << 1);
    pub const CACHE: MetaFiles = MetaFiles(1 << 2);
    pub const EXPUNGE: MetaFiles = MetaFiles(1 << 3);
    pub const SQUAT: MetaFiles = MetaFiles(1 << 4);
    pub const ANNOTATIONS: MetaFiles = MetaFiles(1 << 5);
    pub const LOCK: MetaFiles = MetaFiles(1 << 6);
    pub const DAV: MetaFiles = MetaFiles(1 << 7);
    pub const ARCHIVECACHE: MetaFiles = MetaFiles(1 << 8);

    /// Whether every file in `other` is in this set.
    pub fn contains(self, other: MetaFiles) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits (bit n = the n-th name in Cyrus's list).
    pub fn bits(self) -> u32 {
        self.0
    }

    fn from_name(name: &str) -> Option<MetaFiles> {
        let i = META_FILE_NAMES.iter().position(|n| *n == name)?;
        Some(MetaFiles(1 << i))
    }
}

/// The `virtdomains` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtDomains {
    /// No virtual domains.
    Off,
    /// The domain comes from the userid (`user@domain`).
    Userid,
    /// The domain comes from the userid or, failing that, the server address.
    On,
}

impl ImapdConf {
    /// The top-level file this configuration was read from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The service name whose `<service>_<option>` lines apply.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// The raw value of `key`: `<service>_<key>` if set, else `<key>`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|(_, e)| e.value.as_str())
    }

    /// The entry and the key it was found under.
    fn entry(&self, key: &str) -> Option<(String, &Entry)> {
        let key = key.to_ascii_lowercase();
        if let Some(svc) = &self.service {
            let full = format!("{svc}_{key}");
            if let Some(e) = self.entries.get(&full) {
                return Some((full, e));
            }
        }
        self.entries.get(&key).map(|e| (key, e))
    }

    /// A switch option (`yes/no/on/off/true/false/1/0`), or `default` when unset.
    pub fn get_switch(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.entry(name) {
            None => Ok(default),
            Some((k, e)) => parse_switch(&e.value)
                .ok_or_else(|| bad(e, &k, "expected yes/no, on/off, true/false or 1/0")),
        }
    }

    /// An integer option (C `strtol` base 0 syntax), or `default` when unset.
    pub fn get_int(&self, name: &str, default: i64) -> Result<i64, ConfigError> {
        match self.entry(name) {
            None => Ok(default),
            Some((k, e)) => parse_int(&e.value).ok_or_else(|| bad(e, &k, "expected an integer")),
        }
    }

    /// A duration option in seconds (`1d2h`, `30m`; a bare number is in `defunit`,
    /// one of `d h m s`), or `default` seconds when unset.
    pub fn get_duration(
        &self,
        name: &str,
        defunit: char,
        default: i64,
    ) -> Result<i64, ConfigError> {
        match self.entry(name) {
            None => Ok(default),
            Some((k, e)) => {
                if !matches!(defunit, 'd' | 'h' | 'm' | 's') {
                    return Err(bad(e, &k, "internal: bad default unit"));
                }
                parse_duration(&e.value, defunit)
                    .ok_or_else(|| bad(e, &k, "expected a duration such as 30m or 7d"))
            }
        }
    }

    fn switch(&self, name: &str, default: bool) -> bool {
        // Known switches were validated when the file was parsed.
        self.get_switch(name, default).unwrap_or(default)
    }

    /// `configdirectory` (mandatory).
    pub fn configdirectory(&self) -> &Path {
        &self.configdirectory
    }

    fn prefixed(&self, prefix: &str) -> BTreeMap<String, PathBuf> {
        let mut names: Vec<String> = Vec::new();
        for key in self.entries.keys() {
            let k = match &self.service {
                Some(svc) => key
                    .strip_prefix(svc.as_str())
                    .and_then(|r| r.strip_prefix('_'))
                    .unwrap_or(key),
                None => key,
            };
            if let Some(name) = k.strip_prefix(prefix) {
                names.push(name.to_string());
            }
        }
        names
            .into_iter()
            .filter_map(|n| {
                let v = self.get(&format!("{prefix}{n}"))?;
                Some((n, PathBuf::from(v)))
            })
            .collect()
    }

    /// Every `partition-<name>`: name → data root.
    pub fn partitions(&self) -> BTreeMap<String, PathBuf> {
        self.prefixed("partition-")
    }

    /// The data root of one partition.
    pub fn partition_dir(&self, partition: &str) -> Option<PathBuf> {
        self.get(&format!("partition-{partition}"))
            .map(PathBuf::from)
    }

    /// `defaultpartition` (lowercased, as Cyrus does), if set.
    pub fn defaultpartition(&self) -> Option<String> {
        self.get("defaultpartition").map(|s| s.to_ascii_lowercase())
    }

    /// Every `metapartition-<name>`.
    pub fn metapartitions(&self) -> BTreeMap<String, PathBuf> {
        self.prefixed("metapartition-")
    }

    /// The meta root of one partition, if one is configured.
    pub fn metapartition_dir(&self, partition: &str) -> Option<PathBuf> {
        self.get(&format!("metapartition-{partition}"))
            .map(PathBuf::from)
    }

    /// `metapartition_files` (default: empty).
    pub fn metapartition_files(&self) -> MetaFiles {
        let mut m = MetaFiles::default();
        for w in self
            .get("metapartition_files")
            .unwrap_or("")
            .split_ascii_whitespace()
        {
            if let Some(f) = MetaFiles::from_name(w) {
                m.0 |= f.0;
            }
        }
        m
    }

    /// `metadir-<kind>-<partition>` (kind: header, index, cache, squat, archivecache).
    pub fn metadir(&self, kind: &str, partition: &str) -> Option<PathBuf> {
        self.get(&format!("metadir-{kind}-{partition}"))
            .map(PathBuf::from)
    }

    /// `archive_enabled` (default off).
    pub fn archive_enabled(&self) -> bool {
        self.switch("archive_enabled", false)
    }

    /// Every `archivepartition-<name>`; empty unless `archive_enabled`.
    pub fn archivepartitions(&self) -> BTreeMap<String, PathBuf> {
        if !self.archive_enabled() {
            return BTreeMap::new();
        }
        self.prefixed("archivepartition-")
    }

    /// The archive root of one partition (only when `archive_enabled`).
    pub fn archivepartition_dir(&self, partition: &str) -> Option<PathBuf> {
        if !self.archive_enabled() {
            return None;
        }
        self.get(&format!("archivepartition-{partition}"))
            .map(PathBuf::from)
    }

    /// Lock root: `mboxname_lockpath`, default `{configdirectory}/lock`.
    pub fn mboxname_lockpath(&self) -> PathBuf {
        match self.get("mboxname_lockpath") {
            Some(p) => PathBuf::from(p),
            None => self.configdirectory.join("lock"),
        }
    }

    /// `servername`, default the host name.
    pub fn servername(&self) -> String {
        match self.get("servername") {
            Some(s) => s.to_string(),
            // gethostname(2) on Linux returns the UTS name the kernel exposes here.
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim_end().to_string())
                .unwrap_or_default(),
        }
    }

    /// `unixhierarchysep` (default on in 3.x).
    pub fn unixhierarchysep(&self) -> bool {
        self.switch("unixhierarchysep", true)
    }

    /// `altnamespace` (default on in 3.x).
    pub fn altnamespace(&self) -> bool {
        self.switch("altnamespace", true)
    }

    /// `virtdomains` (default off).
    pub fn virtdomains(&self) -> VirtDomains {
        match self.get("virtdomains").map(normalize_enum) {
            Some("userid") => VirtDomains::Userid,
            Some("on") => VirtDomains::On,
            _ => VirtDomains::Off,
        }
    }

    /// `defaultdomain`, if set (a mailbox in this domain is stored without one).
    pub fn defaultdomain(&self) -> Option<&str> {
        self.get("defaultdomain")
    }

    /// `hashimapspool` (default off).
    pub fn hashimapspool(&self) -> bool {
        self.switch("hashimapspool", false)
    }

    /// `fulldirhash` (default off).
    pub fn fulldirhash(&self) -> bool {
        self.switch("fulldirhash", false)
    }

    /// `mailbox_legacy_dirs` (default off).
    pub fn mailbox_legacy_dirs(&self) -> bool {
        self.switch("mailbox_legacy_dirs", false)
    }

    /// `deletedprefix` (default `DELETED`).
    pub fn deletedprefix(&self) -> &str {
        self.get("deletedprefix").unwrap_or("DELETED")
    }

    /// `sievedir` (default `/usr/sieve`).
    pub fn sievedir(&self) -> PathBuf {
        PathBuf::from(self.get("sievedir").unwrap_or("/usr/sieve"))
    }

    /// `mboxlist_db_path`, default `{configdirectory}/mailboxes.db`.
    pub fn mboxlist_db_path(&self) -> PathBuf {
        match self.get("mboxlist_db_path") {
            Some(p) => PathBuf::from(p),
            None => self.configdirectory.join("mailboxes.db"),
        }
    }

    /// `mboxlist_db`; we only read twoskip, so any other backend is an error.
    pub fn mboxlist_db(&self) -> Result<&str, ConfigError> {
        match self.entry("mboxlist_db") {
            None => Ok("twoskip"),
            Some((_, e)) if e.value == "twoskip" => Ok("twoskip"),
            Some((k, e)) => Err(ConfigError::new(
                &e.file,
                &k,
                format!(
                    "backend '{}' on line {} is not supported (cyrvault reads only twoskip)",
                    e.value, e.line
                ),
            )),
        }
    }

    /// `subscription_db` (default `flat`).
    pub fn subscription_db(&self) -> &str {
        self.get("subscription_db").unwrap_or("flat")
    }

    /// `quota_db` (default `quotalegacy`: one file per quota root).
    pub fn quota_db(&self) -> &str {
        self.get("quota_db").unwrap_or("quotalegacy")
    }

    /// `quota_db_path`, default `{configdirectory}/quotas.db`. For `quotalegacy` only
    /// its directory counts: the files are `<that dir>/quota/<h>/<root>`
    /// (`cyrusdb_quotalegacy.c` strips the file name, `hash_quota` adds `quota/`).
    pub fn quota_db_path(&self) -> PathBuf {
        match self.get("quota_db_path") {
            Some(p) => PathBuf::from(p),
            None => self.configdirectory.join("quotas.db"),
        }
    }

    /// `seenstate_db` (default `twoskip`).
    pub fn seenstate_db(&self) -> &str {
        self.get("seenstate_db").unwrap_or("twoskip")
    }

    /// `cyrus_user` (default `cyrus`, Debian's build default).
    pub fn cyrus_user(&self) -> &str {
        self.get("cyrus_user").unwrap_or("cyrus")
    }

    /// `syslog_prefix`, if set.
    pub fn syslog_prefix(&self) -> Option<&str> {
        self.get("syslog_prefix")
    }

    /// `umask` (octal string, default `077`), the mask Cyrus processes run under.
    pub fn umask(&self) -> Result<u32, ConfigError> {
        match self.entry("umask") {
            None => Ok(0o077),
            Some((k, e)) => u32::from_str_radix(&e.value, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| bad(e, &k, "expected an octal mask such as 077")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_imapd_conf;
    use super::super::tests::{BASE, parse};
    use super::*;

    #[test]
    fn service_prefixed_partition() {
        let t = "configdirectory: /x\npartition-default: /a\nimap_partition-default: /b\n\
                 imap_partition-other: /c\n";
        let c = parse_imapd_conf(t, "t", Some("imap")).unwrap();
        let p = c.partitions();
        assert_eq!(p["default"], PathBuf::from("/b"));
        assert_eq!(p["other"], PathBuf::from("/c"));
        let c = parse_imapd_conf(t, "t", Some("lmtp")).unwrap();
        assert_eq!(c.partitions().len(), 1);
    }

    #[test]
    fn configdirectory_substitution() {
        let c = parse(
            "configdirectory: /var/lib/cyrus\nmboxname_lockpath: {CONFIGDIRECTORY}/locks\n\
             sievedir: {configdirectory}/sieve\nunknown_thing: {configdirectory}/x\n",
        )
        .unwrap();
        assert_eq!(c.mboxname_lockpath(), PathBuf::from("/var/lib/cyrus/locks"));
        assert_eq!(c.sievedir(), PathBuf::from("/var/lib/cyrus/sieve"));
        assert_eq!(c.get("unknown_thing"), Some("{configdirectory}/x"));
    }

    #[test]
    fn defaults() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.mboxname_lockpath(), PathBuf::from("/var/lib/cyrus/lock"));
        assert_eq!(
            c.mboxlist_db_path(),
            PathBuf::from("/var/lib/cyrus/mailboxes.db")
        );
        assert_eq!(c.mboxlist_db(), Ok("twoskip"));
        assert_eq!(c.subscription_db(), "flat");
        assert_eq!(c.seenstate_db(), "twoskip");
        assert_eq!(c.deletedprefix(), "DELETED");
        assert_eq!(c.sievedir(), PathBuf::from("/usr/sieve"));
        assert_eq!(c.cyrus_user(), "cyrus");
        assert_eq!(c.umask(), Ok(0o077));
        assert!(c.unixhierarchysep());
        assert!(!c.hashimapspool());
        assert!(!c.fulldirhash());
        assert!(!c.mailbox_legacy_dirs());
        assert!(!c.archive_enabled());
        assert_eq!(c.virtdomains(), VirtDomains::Off);
        assert_eq!(c.metapartition_files(), MetaFiles::default());
        assert_eq!(c.defaultpartition(), None);
        assert_eq!(c.syslog_prefix(), None);
        assert!(!c.servername().is_empty());
    }

    #[test]
    fn typed_getters() {
        let c = parse(&format!(
            "{BASE}virtdomains: userid\nmetapartition_files: header index  archivecache\n\
             archivepartition-default: /arch\npartition-default: /d\nmetapartition-default: /m\n\
             metadir-cache-default: /mc\ndefaultpartition: Default\nmboxlist_db: skiplist\n"
        ))
        .unwrap();
        assert_eq!(c.virtdomains(), VirtDomains::Userid);
        let m = c.metapartition_files();
        assert!(m.contains(MetaFiles::HEADER) && m.contains(MetaFiles::INDEX));
        assert!(m.contains(MetaFiles::ARCHIVECACHE) && !m.contains(MetaFiles::CACHE));
        assert!(
            c.archivepartitions().is_empty(),
            "only with archive_enabled"
        );
        assert_eq!(c.metapartitions()["default"], PathBuf::from("/m"));
        assert_eq!(c.metadir("cache", "default"), Some(PathBuf::from("/mc")));
        assert_eq!(c.defaultpartition().as_deref(), Some("default"));
        let e = c.mboxlist_db().unwrap_err();
        assert_eq!(e.option, "mboxlist_db");
        assert!(e.message.contains("skiplist"));
        let c = parse(&format!(
            "{BASE}virtdomains: yes\narchive_enabled: 1\narchivepartition-x: /a\n"
        ))
        .unwrap();
        assert_eq!(c.virtdomains(), VirtDomains::On);
        assert_eq!(c.archivepartitions()["x"], PathBuf::from("/a"));
    }

    #[test]
    fn generic_typed_getters() {
        for (v, want) in [("yes", true), ("off", false), ("1", true), ("f", false)] {
            let c = parse(&format!("{BASE}fulldirhash: {v}\n")).unwrap();
            assert_eq!(c.fulldirhash(), want, "{v}");
        }
        let c = parse(&format!("{BASE}a: 5\nb: 2h\nc: zz\n")).unwrap();
        assert_eq!(c.get_int("a", 0), Ok(5));
        assert_eq!(c.get_int("missing", 9), Ok(9));
        assert_eq!(c.get_duration("b", 's', 0), Ok(7200));
        assert_eq!(c.get_duration("a", 'm', 0), Ok(300));
        let e = c.get_switch("c", false).unwrap_err();
        assert_eq!(e.option, "c");
        assert!(e.message.contains("'zz'"), "{e}");
        assert!(c.get_int("c", 0).is_err());
        assert_eq!(c.get_switch("nothere", true), Ok(true));
    }
}
