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

mod getters;
mod options;

pub use getters::{MetaFiles, VirtDomains};
use options::{OptType, known_type, validate};

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
pub fn load(path: Option<&Path>, service: Option<&str>) -> Result<ImapdConf, ConfigError> {
    let top = path
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| DEFAULT_CONFIG.to_string());
    let prefix = std::env::var_os("CYRUS_PREFIX").map(|p| p.to_string_lossy().into_owned());
    load_with_prefix(&top, service, prefix.as_deref())
}

/// [`load`] with an explicit `CYRUS_PREFIX` value.
fn load_with_prefix(
    top: &str,
    service: Option<&str>,
    prefix: Option<&str>,
) -> Result<ImapdConf, ConfigError> {
    let mut b = Builder {
        entries: BTreeMap::new(),
        included: HashSet::new(),
    };
    read_file(&mut b, top, top, prefix)?;
    finish(b, top, service)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse `t` as a whole imapd.conf (no service prefix); shared with the getters' tests.
    pub(super) fn parse(t: &str) -> Result<ImapdConf, ConfigError> {
        parse_imapd_conf(t, "test.conf", None)
    }

    /// The one line every config needs.
    pub(super) const BASE: &str = "configdirectory: /var/lib/cyrus\n";

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
    fn cyrus_prefix_is_tried_first() {
        let d = scratch("prefix");
        let real = d.join("etc");
        std::fs::create_dir_all(real.join("tmp")).unwrap();
        // "<prefix>/x.conf" shadows "/x.conf"; includes are prefixed too.
        let inner = d.join("inc.conf");
        std::fs::write(&inner, "from: plain\n").unwrap();
        let shadow = real.join(inner.strip_prefix("/").unwrap());
        std::fs::create_dir_all(shadow.parent().unwrap()).unwrap();
        std::fs::write(&shadow, "from: prefixed\n").unwrap();
        let top = d.join("top.conf");
        std::fs::write(&top, format!("{BASE}@include: {}\n", inner.display())).unwrap();
        let pre = real.to_str().unwrap();
        let c = load_with_prefix(top.to_str().unwrap(), None, Some(pre)).unwrap();
        assert_eq!(c.get("from"), Some("prefixed"));
        let c = load_with_prefix(top.to_str().unwrap(), None, None).unwrap();
        assert_eq!(c.get("from"), Some("plain"));
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
