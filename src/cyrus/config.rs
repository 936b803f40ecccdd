//! `imapd.conf`: the parser (pure, [`parse_imapd_conf`]), the file loader ([`load`],
//! which follows `@include:` and honours `CYRUS_PREFIX`) and typed getters with
//! Cyrus 3.6's defaults for the options a backup needs.
//!
//! The rules mirror `config_read_file` in Cyrus's `lib/libconfig.c` (3.6.1); see
//! `doc/cyrus-files.md` ("imapd.conf") and `shared/cyrus-reference.md` §11:
//! `key: value` lines, `#` comments only at the start of a line, a trailing
//! backslash continues the line, keys are lowercased, an empty value or the same
//! key twice is fatal, `<service>_<option>` wins over `<option>`, and known string
//! options starting with `{configdirectory}` get that prefix replaced.
//! Paths derived from the configuration live in `cyrus::paths`, not here.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The file Cyrus reads when no `-C` is given (`CONFIG_FILENAME`).
pub const DEFAULT_CONFIG: &str = "/etc/imapd.conf";

/// A bad or missing configuration option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file (or "-C" file) the option came from.
    pub file: String,
    /// The option name as written (with its service prefix, if any); empty when the
    /// error is about the file itself.
    pub option: String,
    /// What is wrong, with the offending value and line where known.
    pub message: String,
}

impl ConfigError {
    /// An error about `option` in `file`.
    pub fn new(file: &str, option: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_string(),
            option: option.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.option.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: option {}: {}", self.file, self.option, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// How Cyrus types an option (`lib/imapoptions`); only the options we know are listed.
#[derive(Clone, Copy)]
enum OptType {
    Str,
    Switch,
    Int,
    Duration,
    Enum(&'static [&'static str]),
    StringList(&'static [&'static str]),
    Bitfield(&'static [&'static str]),
}

const DB_BACKENDS: &[&str] = &["flat", "skiplist", "twoskip", "zeroskip"];
const MBOXLIST_BACKENDS: &[&str] = &["flat", "skiplist", "sql", "twoskip", "zeroskip"];
const META_FILE_NAMES: &[&str] = &[
    "header",
    "index",
    "cache",
    "expunge",
    "squat",
    "annotations",
    "lock",
    "dav",
    "archivecache",
];

/// The Cyrus options we read or validate, with their Cyrus types (from
/// `lib/imapoptions` at cyrus-imapd-3.6.1). Cyrus checks every known option; we
/// check these and keep every other key verbatim, as Cyrus does with its overflow
/// table.
const KNOWN: &[(&str, OptType)] = &[
    ("configdirectory", OptType::Str),
    ("defaultpartition", OptType::Str),
    ("defaultdomain", OptType::Str),
    ("metapartition_files", OptType::Bitfield(META_FILE_NAMES)),
    ("archive_enabled", OptType::Switch),
    ("mboxname_lockpath", OptType::Str),
    ("servername", OptType::Str),
    ("unixhierarchysep", OptType::Switch),
    ("altnamespace", OptType::Switch),
    ("virtdomains", OptType::Enum(&["off", "userid", "on"])),
    ("hashimapspool", OptType::Switch),
    ("fulldirhash", OptType::Switch),
    ("mailbox_legacy_dirs", OptType::Switch),
    ("deletedprefix", OptType::Str),
    ("delete_mode", OptType::Enum(&["immediate", "delayed"])),
    (
        "expunge_mode",
        OptType::Enum(&["default", "immediate", "semidelayed", "delayed"]),
    ),
    ("sievedir", OptType::Str),
    ("sieveusehomedir", OptType::Switch),
    ("mboxlist_db", OptType::StringList(MBOXLIST_BACKENDS)),
    ("mboxlist_db_path", OptType::Str),
    (
        "annotation_db",
        OptType::StringList(&["skiplist", "twoskip", "zeroskip"]),
    ),
    ("annotation_db_path", OptType::Str),
    ("subscription_db", OptType::StringList(DB_BACKENDS)),
    ("seenstate_db", OptType::StringList(DB_BACKENDS)),
    ("cyrus_user", OptType::Str),
    ("syslog_prefix", OptType::Str),
    ("umask", OptType::Str),
    ("temp_path", OptType::Str),
    ("proc_path", OptType::Str),
    ("lmtpsocket", OptType::Str),
    ("idlesocket", OptType::Str),
    ("notifysocket", OptType::Str),
    ("duplicate_db_path", OptType::Str),
    ("statuscache_db_path", OptType::Str),
    ("quota_db_path", OptType::Str),
    ("ptscache_db_path", OptType::Str),
    ("tls_sessions_db_path", OptType::Str),
    ("userdeny_db_path", OptType::Str),
    ("backup_db_path", OptType::Str),
    ("sync_cache_db_path", OptType::Str),
    ("zoneinfo_db_path", OptType::Str),
    ("newsrc_db_path", OptType::Str),
    ("conversations", OptType::Switch),
    ("maxword", OptType::Int),
    ("maxquoted", OptType::Int),
    ("mailbox_maxmessages_addressbook", OptType::Int),
    ("timeout", OptType::Duration),
    ("expunge_days", OptType::Int),
];

fn known_type(name: &str) -> Option<OptType> {
    KNOWN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

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
    Off,
    Userid,
    On,
}

/// One `key: value` line, as read.
#[derive(Debug, Clone)]
struct Entry {
    value: String,
    file: String,
    line: usize,
}

/// A parsed `imapd.conf`, seen through one service's eyes (`service` decides which
/// `<service>_<option>` lines apply).
#[derive(Debug, Clone)]
pub struct ImapdConf {
    file: String,
    service: Option<String>,
    entries: BTreeMap<String, Entry>,
    configdirectory: PathBuf,
}

/// Collects entries while the (possibly nested) files are read.
struct Builder {
    entries: BTreeMap<String, Entry>,
    included: HashSet<String>,
}

/// Parse the text of an `imapd.conf`. `file` names it in errors; `service` is the
/// Cyrus service name (`config_ident`) whose prefixed options apply. `@include:`
/// needs the file system, so it is an error here: use [`load`].
pub fn parse_imapd_conf(
    text: &str,
    file: &str,
    service: Option<&str>,
) -> Result<ImapdConf, ConfigError> {
    let mut b = Builder {
        entries: BTreeMap::new(),
        included: HashSet::new(),
    };
    b.included.insert(file.to_string());
    let mut no_include = |name: &str, _: &mut Builder, from: &str| {
        Err(ConfigError::new(
            from,
            "@include",
            format!("cannot include {name} when parsing text (use config::load)"),
        ))
    };
    parse_into(&mut b, text, file, &mut no_include)?;
    finish(b, file, service)
}

/// Read `path` (None = `/etc/imapd.conf`) and the files it includes. Like Cyrus,
/// `$CYRUS_PREFIX<path>` is tried before `<path>` for every file.
pub fn load(path: Option<&Path>, service: Option<&str>) -> crate::Result<ImapdConf> {
    let top = path
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| DEFAULT_CONFIG.to_string());
    let prefix = std::env::var_os("CYRUS_PREFIX").map(|p| p.to_string_lossy().into_owned());
    let mut b = Builder {
        entries: BTreeMap::new(),
        included: HashSet::new(),
    };
    read_file(&mut b, &top, &top, prefix.as_deref())?;
    Ok(finish(b, &top, service)?)
}

fn read_file(
    b: &mut Builder,
    name: &str,
    from: &str,
    prefix: Option<&str>,
) -> Result<(), ConfigError> {
    let mut text = None;
    if let Some(pre) = prefix {
        text = std::fs::read(format!("{pre}{name}")).ok();
    }
    let bytes = match text {
        Some(t) => t,
        None => std::fs::read(name).map_err(|e| {
            let opt = if name == from { "" } else { "@include" };
            ConfigError::new(
                from,
                opt,
                format!("cannot open configuration file {name}: {e}"),
            )
        })?,
    };
    // Cyrus keys its include table by the name as written, and a second read of
    // the same name (a loop, or a diamond) is fatal.
    if !b.included.insert(name.to_string()) {
        return Err(ConfigError::new(
            from,
            "@include",
            format!("configuration file {name} included twice"),
        ));
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut include = |inc: &str, b: &mut Builder, _from: &str| read_file(b, inc, name, prefix);
    parse_into(b, &text, name, &mut include)
}

type IncludeFn<'a> = dyn FnMut(&str, &mut Builder, &str) -> Result<(), ConfigError> + 'a;

/// Split `text` into logical lines (backslash continuation), then `key: value`.
fn parse_into(
    b: &mut Builder,
    text: &str,
    file: &str,
    include: &mut IncludeFn<'_>,
) -> Result<(), ConfigError> {
    let mut lineno = 0usize;
    let mut logical = String::new();
    let mut lines = text.split('\n').peekable();
    while let Some(raw) = lines.next() {
        // A final empty piece after the last '\n' is not a line.
        if raw.is_empty() && lines.peek().is_none() {
            break;
        }
        lineno += 1;
        if let Some(stripped) = raw.strip_suffix('\\')
            && lines.peek().is_some()
        {
            logical.push_str(stripped);
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical);
        parse_line(b, &line, file, lineno, include)?;
    }
    Ok(())
}

fn parse_line(
    b: &mut Builder,
    line: &str,
    file: &str,
    lineno: usize,
    include: &mut IncludeFn<'_>,
) -> Result<(), ConfigError> {
    let p = line.trim_start_matches(|c: char| c.is_ascii_whitespace());
    if p.is_empty() || p.starts_with('#') {
        return Ok(());
    }
    let body = p.strip_prefix('@');
    let rest = body.unwrap_or(p);
    let keylen = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(rest.len());
    let (key, after) = rest.split_at(keylen);
    let Some(value) = after.strip_prefix(':') else {
        return Err(ConfigError::new(
            file,
            "",
            format!("invalid option name on line {lineno}"),
        ));
    };
    let key = key.to_ascii_lowercase();
    let value = value.trim_matches(|c: char| c.is_ascii_whitespace());
    let shown = if body.is_some() {
        format!("@{key}")
    } else {
        key.clone()
    };
    if value.is_empty() {
        return Err(ConfigError::new(
            file,
            &shown,
            format!("empty option value on line {lineno}"),
        ));
    }
    if body.is_some() {
        if key == "include" {
            return include(value, b, file);
        }
        return Err(ConfigError::new(
            file,
            &shown,
            format!("invalid directive on line {lineno}"),
        ));
    }
    if let Some(prev) = b.entries.get(&key) {
        return Err(ConfigError::new(
            file,
            &key,
            format!(
                "specified twice (line {} of {}, again on line {lineno})",
                prev.line, prev.file
            ),
        ));
    }
    b.entries.insert(
        key,
        Entry {
            value: value.to_string(),
            file: file.to_string(),
            line: lineno,
        },
    );
    Ok(())
}

/// The option a key sets for `service`: `<service>_<opt>` sets `<opt>` when `<opt>`
/// is a known option (Cyrus's rule); anything else names itself.
fn effective_name<'k>(key: &'k str, service: Option<&str>) -> Option<&'k str> {
    if let Some(svc) = service
        && let Some(rest) = key.strip_prefix(svc).and_then(|r| r.strip_prefix('_'))
        && known_type(rest).is_some()
    {
        return Some(rest);
    }
    known_type(key).map(|_| key)
}

fn finish(b: Builder, file: &str, service: Option<&str>) -> Result<ImapdConf, ConfigError> {
    let service = service.map(|s| s.to_ascii_lowercase());
    let mut entries = b.entries;
    for (key, e) in entries.iter() {
        if let Some(name) = effective_name(key, service.as_deref())
            && let Some(t) = known_type(name)
        {
            validate(t, key, e)?;
        }
    }
    let lookup = |entries: &BTreeMap<String, Entry>, k: &str| -> Option<String> {
        if let Some(svc) = service.as_deref()
            && let Some(e) = entries.get(&format!("{svc}_{k}"))
        {
            return Some(e.value.clone());
        }
        entries.get(k).map(|e| e.value.clone())
    };
    let Some(configdir) = lookup(&entries, "configdirectory") else {
        return Err(ConfigError::new(
            file,
            "configdirectory",
            "not specified in configuration file",
        ));
    };
    // `{configdirectory}` prefix (matched case-insensitively) on known string options.
    for (key, e) in entries.iter_mut() {
        let Some(name) = effective_name(key, service.as_deref()) else {
            continue;
        };
        if name == "configdirectory" || !matches!(known_type(name), Some(OptType::Str)) {
            continue;
        }
        const TOKEN: &str = "{configdirectory}";
        if e.value.len() >= TOKEN.len()
            && e.value.is_char_boundary(TOKEN.len())
            && e.value[..TOKEN.len()].eq_ignore_ascii_case(TOKEN)
        {
            e.value = format!("{configdir}{}", &e.value[TOKEN.len()..]);
        }
    }
    if let Some(dp) = lookup(&entries, "defaultpartition")
        && !dp.bytes().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(ConfigError::new(
            file,
            "defaultpartition",
            format!("'{dp}' contains a non-alphanumeric character"),
        ));
    }
    Ok(ImapdConf {
        file: file.to_string(),
        service,
        entries,
        configdirectory: PathBuf::from(configdir),
    })
}

fn bad(e: &Entry, key: &str, what: &str) -> ConfigError {
    ConfigError::new(
        &e.file,
        key,
        format!("invalid value '{}' on line {} ({what})", e.value, e.line),
    )
}

fn validate(t: OptType, key: &str, e: &Entry) -> Result<(), ConfigError> {
    let v = e.value.as_str();
    match t {
        OptType::Str => Ok(()),
        OptType::Switch => parse_switch(v)
            .map(|_| ())
            .ok_or_else(|| bad(e, key, "expected yes/no, on/off, true/false or 1/0")),
        OptType::Int => parse_int(v)
            .map(|_| ())
            .ok_or_else(|| bad(e, key, "expected an integer")),
        OptType::Duration => parse_duration(v, 's')
            .map(|_| ())
            .ok_or_else(|| bad(e, key, "expected a duration such as 30m or 7d")),
        OptType::Enum(names) => {
            let n = normalize_enum(v);
            if names.contains(&n) {
                Ok(())
            } else {
                Err(bad(
                    e,
                    key,
                    &format!("expected one of {}", names.join(", ")),
                ))
            }
        }
        OptType::StringList(names) => {
            if names.contains(&v) {
                Ok(())
            } else {
                Err(bad(
                    e,
                    key,
                    &format!("expected one of {}", names.join(", ")),
                ))
            }
        }
        OptType::Bitfield(names) => {
            for word in v.split_ascii_whitespace() {
                if !names.contains(&word) {
                    return Err(ConfigError::new(
                        &e.file,
                        key,
                        format!(
                            "invalid value '{word}' in '{v}' on line {} (known: {})",
                            e.line,
                            names.join(" ")
                        ),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Cyrus's `config_parse_switch`: decided by the first character(s).
fn parse_switch(v: &str) -> Option<bool> {
    let b = v.as_bytes();
    match b.first()? {
        b'0' | b'n' | b'f' => Some(false),
        b'1' | b'y' | b't' => Some(true),
        b'o' if b.get(1) == Some(&b'f') => Some(false),
        b'o' if b.get(1) == Some(&b'n') => Some(true),
        _ => None,
    }
}

/// ENUM values accept on/off synonyms (`config_read_file`).
fn normalize_enum(v: &str) -> &str {
    match v {
        "1" | "yes" | "t" | "true" => "on",
        "0" | "no" | "f" | "false" => "off",
        other => other,
    }
}

/// `strtol(v, &end, 0)` with `*end == 0` required: optional sign, `0x` hex,
/// leading-0 octal, decimal.
fn parse_int(v: &str) -> Option<i64> {
    let s = v.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, h)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let n = i64::from_str_radix(digits, radix).ok()?;
    Some(if neg { -n } else { n })
}

/// Cyrus's `config_parseduration`: `[-]` then groups of digits with a unit `d h m s`;
/// a trailing bare number takes `defunit`. Returns seconds.
fn parse_duration(v: &str, defunit: char) -> Option<i64> {
    let mut s = v.to_string();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        s.push(defunit);
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r.to_string()),
        None => (false, s),
    };
    let mut total: i64 = 0;
    let mut acc: i64 = 0;
    let mut saw_digit = false;
    for c in body.chars() {
        if let Some(d) = c.to_digit(10) {
            acc = acc.checked_mul(10)?.checked_add(i64::from(d))?;
            saw_digit = true;
            continue;
        }
        if !saw_digit {
            return None;
        }
        saw_digit = false;
        let mult = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(acc.checked_mul(mult)?)?;
        acc = 0;
    }
    Some(if neg { -total } else { total })
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
    use super::*;

    fn parse(t: &str) -> Result<ImapdConf, ConfigError> {
        parse_imapd_conf(t, "test.conf", None)
    }

    const BASE: &str = "configdirectory: /var/lib/cyrus\n";

    #[test]
    fn basic_lines_comments_and_case() {
        let c = parse(
            "# comment\n\n   # indented comment\nConfigDirectory: /var/lib/cyrus\n\
             Partition-Default:   /spool  \nsomething: a # not a comment\n",
        )
        .unwrap();
        assert_eq!(c.configdirectory(), Path::new("/var/lib/cyrus"));
        assert_eq!(c.get("partition-default"), Some("/spool"));
        assert_eq!(c.get("PARTITION-DEFAULT"), Some("/spool"));
        assert_eq!(c.get("something"), Some("a # not a comment"));
        assert_eq!(c.partitions().len(), 1);
    }

    #[test]
    fn continuation_joins_lines_and_counts_them() {
        let c = parse("configdirectory: /x\nlong: a\\\n  b\\\nc\n").unwrap();
        assert_eq!(c.get("long"), Some("a  bc"));
        let e = parse("configdirectory: /x\nx: a\\\nb\nhashimapspool: maybe\n").unwrap_err();
        assert!(e.message.contains("line 4"), "{e}");
        // A comment that ends in a backslash swallows the next line, as in Cyrus.
        let c = parse("configdirectory: /x\n# c \\\nhidden: 1\n").unwrap();
        assert_eq!(c.get("hidden"), None);
    }

    #[test]
    fn missing_configdirectory_is_fatal() {
        let e = parse("partition-default: /x\n").unwrap_err();
        assert_eq!(e.option, "configdirectory");
    }

    #[test]
    fn empty_value_and_bad_key_are_fatal() {
        let e = parse("configdirectory: /x\nfoo:   \n").unwrap_err();
        assert_eq!(e.option, "foo");
        assert!(e.message.contains("empty"));
        let e = parse("configdirectory: /x\nfoo bar: 1\n").unwrap_err();
        assert!(e.message.contains("invalid option name on line 2"), "{e}");
        let e = parse("configdirectory: /x\nfoo : 1\n").unwrap_err();
        assert!(e.message.contains("invalid option name"));
        let e = parse("configdirectory: /x\n@frobnicate: 1\n").unwrap_err();
        assert!(e.message.contains("invalid directive"));
    }

    #[test]
    fn duplicates_are_fatal_but_service_form_may_coexist() {
        let e = parse("configdirectory: /x\nfoo: 1\nFOO: 2\n").unwrap_err();
        assert_eq!(e.option, "foo");
        assert!(e.message.contains("twice"));
        let e = parse("configdirectory: /x\nconfigdirectory: /y\n").unwrap_err();
        assert_eq!(e.option, "configdirectory");
        let t = "configdirectory: /x\ncyrvaultd_secret_file: /a\nsecret_file: /b\n\
                 hashimapspool: no\ncyrvaultd_hashimapspool: yes\n";
        let c = parse_imapd_conf(t, "t", Some("cyrvaultd")).unwrap();
        assert_eq!(c.get("secret_file"), Some("/a"));
        assert!(c.hashimapspool());
        let c = parse_imapd_conf(t, "t", Some("imap")).unwrap();
        assert_eq!(c.get("secret_file"), Some("/b"));
        assert!(!c.hashimapspool());
        let c = parse_imapd_conf(t, "t", None).unwrap();
        assert_eq!(c.get("secret_file"), Some("/b"));
    }

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
    fn bad_typed_values_name_option_and_value() {
        let e = parse(&format!("{BASE}hashimapspool: maybe\n")).unwrap_err();
        assert_eq!(e.option, "hashimapspool");
        assert!(e.message.contains("'maybe'"), "{e}");
        assert!(
            e.to_string()
                .starts_with("test.conf: option hashimapspool:")
        );
        let e = parse(&format!("{BASE}virtdomains: sometimes\n")).unwrap_err();
        assert_eq!(e.option, "virtdomains");
        let e = parse(&format!("{BASE}maxword: 12abc\n")).unwrap_err();
        assert_eq!(e.option, "maxword");
        let e = parse(&format!("{BASE}metapartition_files: header bogus\n")).unwrap_err();
        assert!(e.message.contains("'bogus'"));
        let e = parse(&format!("{BASE}timeout: 5x\n")).unwrap_err();
        assert_eq!(e.option, "timeout");
        let e = parse(&format!("{BASE}mboxlist_db: berkeley\n")).unwrap_err();
        assert_eq!(e.option, "mboxlist_db");
        let e = parse(&format!("{BASE}defaultpartition: my-part\n")).unwrap_err();
        assert_eq!(e.option, "defaultpartition");
        // Another service's prefixed option is not checked (Cyrus keeps it verbatim).
        let c = parse_imapd_conf(
            &format!("{BASE}lmtp_hashimapspool: maybe\n"),
            "t",
            Some("imap"),
        );
        assert!(c.is_ok());
        let e = parse_imapd_conf(
            &format!("{BASE}imap_hashimapspool: maybe\n"),
            "t",
            Some("imap"),
        )
        .unwrap_err();
        assert_eq!(e.option, "imap_hashimapspool");
    }

    #[test]
    fn switches_ints_durations() {
        for (v, want) in [
            ("yes", true),
            ("on", true),
            ("true", true),
            ("1", true),
            ("t", true),
            ("no", false),
            ("off", false),
            ("false", false),
            ("0", false),
        ] {
            let c = parse(&format!("{BASE}fulldirhash: {v}\n")).unwrap();
            assert_eq!(c.fulldirhash(), want, "{v}");
        }
        assert_eq!(parse_switch("o"), None);
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("010"), Some(8));
        assert_eq!(parse_int("-7"), Some(-7));
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("1 "), None);
        assert_eq!(
            parse_duration("1d2h3m4s", 's'),
            Some(86400 + 7200 + 180 + 4)
        );
        assert_eq!(parse_duration("30", 'm'), Some(1800));
        assert_eq!(parse_duration("-2h", 's'), Some(-7200));
        assert_eq!(parse_duration("h", 's'), None);
        assert_eq!(parse_duration("1w", 's'), None);
        let c = parse(&format!("{BASE}a: 5\nb: 2h\nc: zz\n")).unwrap();
        assert_eq!(c.get_int("a", 0), Ok(5));
        assert_eq!(c.get_int("missing", 9), Ok(9));
        assert_eq!(c.get_duration("b", 's', 0), Ok(7200));
        assert_eq!(c.get_duration("a", 'm', 0), Ok(300));
        assert!(c.get_switch("c", false).is_err());
        assert_eq!(c.get_switch("nothere", true), Ok(true));
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
    fn include_is_refused_without_files() {
        let e = parse(&format!("{BASE}@include: /etc/other.conf\n")).unwrap_err();
        assert_eq!(e.option, "@include");
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "cyrvault-conf-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn load_follows_includes_and_detects_loops() {
        let d = scratch("inc");
        let a = d.join("a.conf");
        let b = d.join("b.conf");
        std::fs::write(&a, format!("{BASE}@include: {}\nx: 1\n", b.display())).unwrap();
        std::fs::write(&b, "y: 2\n").unwrap();
        let c = load(Some(&a), None).unwrap();
        assert_eq!(c.get("y"), Some("2"));
        assert_eq!(c.get("x"), Some("1"));
        // Duplicate across files is fatal too.
        std::fs::write(&b, "x: 2\n").unwrap();
        let e = load(Some(&a), None).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        // A loop.
        std::fs::write(&b, format!("@include: {}\n", a.display())).unwrap();
        let e = load(Some(&a), None).unwrap_err();
        assert!(e.to_string().contains("included twice"), "{e}");
        // A missing include names the file.
        std::fs::write(&b, format!("@include: {}/nope.conf\n", d.display())).unwrap();
        let e = load(Some(&a), None).unwrap_err();
        assert!(e.to_string().contains("nope.conf"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn load_debian_etc_imapd_conf() {
        let c = load(None, None).unwrap();
        assert_eq!(c.configdirectory(), Path::new("/var/lib/cyrus"));
        assert_eq!(
            c.partitions()["default"],
            PathBuf::from("/var/spool/cyrus/mail")
        );
        assert_eq!(c.mboxname_lockpath(), PathBuf::from("/run/cyrus/lock"));
        assert!(c.hashimapspool());
        assert!(!c.unixhierarchysep());
        assert_eq!(c.sievedir(), PathBuf::from("/var/spool/sieve"));
        assert_eq!(c.syslog_prefix(), Some("cyrus"));
        assert_eq!(c.defaultpartition().as_deref(), Some("default"));
        assert_eq!(c.mboxlist_db(), Ok("twoskip"));
    }
}
