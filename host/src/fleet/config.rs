//! `cyrvault.conf`: the backup host's configuration, in imapd.conf syntax
//! (`key: value` lines, `#` comments). It names the servers, the vault roots, the
//! user directory's database and the scheduler's limits. See `doc/fleet.md`.
//!
//! ```text
//! servers: imap1 imap2
//! imap1_address: imap1.example.org:4190
//! imap1_secret_file: /etc/cyrvault/imap1.secret
//! imap1_servername: imap1            # the slot; learnt from the server if absent
//! imap1_tls: yes                     # STARTTLS, server checked against tls_ca_file
//! imap1_tls_pin: AB:CD:...           # or against its certificate's SHA-256
//! tls_ca_file: /etc/cyrvault/ca.pem  # default for every server (<name>_tls_ca_file)
//! imap1_unit_p2: disk-b             # drive unit override for partition p2
//! vault: /srv/vault1 /srv/vault2
//! database: sqlite:/srv/vault1/fleet.db      # or postgresql://user@host/db
//! workers: 12
//! jobs: 0                           # users one worker backs up at once (0: the cores)
//! batch: 50
//! unit_limit: 1
//! server_limit: 0                   # 0: no limit
//! lease: 900                        # seconds
//! retry_backoff: 300                # seconds, doubled per consecutive temporary failure
//! round_window: 43200               # seconds an open round is joined (else closed)
//! stale_after: 93600                # seconds without a good backup before a user is stale
//! metrics_file: /var/lib/prometheus/node-exporter/cyrvault.prom   # written after each run
//! prune_keep_daily: 7               # retention after each user's backup (doc/retention.md):
//! prune_keep_monthly: 12            #   prune_keep_{last,hourly,daily,weekly,monthly,yearly},
//! prune_keep_deleted: 30d           #   prune_keep_within, prune_keep_deleted
//! ```
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::secret::Secret;
use crate::tls::client::{ClientOptions, parse_pin};

/// One IMAP server the fleet backs up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConf {
    /// The name used in the directory and in config keys.
    pub name: String,
    /// `host:port` of its cyrvaultd.
    pub address: String,
    /// File holding the shared secret for `AUTH`.
    pub secret_file: Option<PathBuf>,
    /// The slot (`servername`); None: learnt from the server.
    pub servername: Option<String>,
    /// TLS to this server (`<name>_tls`, `_tls_ca_file`, `_tls_pin`,
    /// `_tls_server_name`; `tls` and `tls_ca_file` apply to every server); None:
    /// plaintext.
    pub tls: Option<ClientOptions>,
    /// Drive unit overrides: partition name → unit name.
    pub units: BTreeMap<String, String>,
    /// Whether the server's shared mailboxes are backed up (`<name>_shared`, default
    /// yes). `no` is the admin saying the server has none (or they are backed up
    /// otherwise): only then may a server that cannot list them pass discovery.
    pub shared: bool,
}

/// The whole `cyrvault.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConf {
    /// Servers in the order `servers:` names them.
    pub servers: Vec<ServerConf>,
    /// Vault roots; a user's archive lives in one of them (chosen at discovery).
    pub vaults: Vec<PathBuf>,
    /// `sqlite:PATH` or `postgresql://...`.
    pub database: String,
    /// Worker processes per `cyrvault run`.
    pub workers: usize,
    /// Users one worker backs up at once (each on its own connection); 0: the number
    /// of cores ([`crate::backup::default_jobs`]).
    pub jobs: usize,
    /// Most users per claim.
    pub batch: usize,
    /// Most workers on one drive unit at once.
    pub unit_limit: usize,
    /// Most workers on one server at once (0: no limit).
    pub server_limit: usize,
    /// Seconds a claim stays valid without renewal.
    pub lease_secs: u64,
    /// Seconds before a user that failed for a temporary reason is retried (doubled
    /// per further failure); other classes are retried by the next run at once.
    pub retry_backoff_secs: u64,
    /// Seconds during which a started round is joined by another `cyrvault run`
    /// (another host, or a restart); an older open round is closed instead.
    pub round_window_secs: u64,
    /// Seconds without a good backup after which a user counts as stale (metrics).
    pub stale_after_secs: u64,
    /// Where `cyrvault run` writes the Prometheus text after each run (node_exporter's
    /// textfile collector); None: not written.
    pub metrics_file: Option<PathBuf>,
    /// The retention policy `cyrvault run` applies after each user's backup
    /// (`prune_keep_*`, doc/retention.md); `None`: no pruning.
    pub retention: Option<crate::retention::Policy>,
}

/// The keys `cyrvault.conf` accepts: exactly those the parser reads, recorded while
/// it parses a minimal file (so a key the parser gains is accepted, and must be
/// documented in cyrvault.conf(5): tests/ops.rs, without a list to keep in step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedKeys {
    /// Global keys (`vault`, `workers`, `prune_keep_daily`, ...).
    pub global: BTreeSet<String>,
    /// Per-server key suffixes: `address` is `<name>_address`; `unit_` takes a
    /// partition after it (`<name>_unit_<partition>`).
    pub per_server: BTreeSet<String>,
}

/// What `cyrvault.conf` accepts (see [`AcceptedKeys`]).
pub fn accepted_keys() -> AcceptedKeys {
    let reader = Reader::new(entries("servers: s\ns_address: x:1\nvault: /v\n", "-").unwrap());
    parse(&reader, "-").expect("the minimal cyrvault.conf parses");
    AcceptedKeys {
        global: reader.global.into_inner(),
        per_server: reader.suffixes.into_inner(),
    }
}

/// Default `workers`.
pub const DEFAULT_WORKERS: usize = 12;
/// Default `batch`.
pub const DEFAULT_BATCH: usize = 50;
/// Default `lease` in seconds.
pub const DEFAULT_LEASE: u64 = 900;
/// Default `retry_backoff` in seconds.
pub const DEFAULT_BACKOFF: u64 = 300;
/// Default `round_window` in seconds.
pub const DEFAULT_ROUND_WINDOW: u64 = 12 * 3600;
/// Default `stale_after` in seconds: a nightly backup may run late by two hours.
pub const DEFAULT_STALE_AFTER: u64 = 26 * 3600;

fn bad(file: &str, line: usize, msg: String) -> Error {
    Error::Other(format!("{file}:{line}: {msg}"))
}

/// Split imapd.conf-style text into `(key, value, line)`; keys lowercased.
fn entries(text: &str, file: &str) -> Result<Vec<(String, String, usize)>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(bad(
                file,
                i + 1,
                format!("expected `key: value`, got {line:?}"),
            ));
        };
        let k = k.trim().to_ascii_lowercase();
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad(file, i + 1, format!("bad key {k:?}")));
        }
        // a trailing `# comment` after whitespace is not part of the value
        let v = match v.find(" #") {
            Some(at) => &v[..at],
            None => v,
        };
        out.push((k, v.trim().to_string(), i + 1));
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(file: &str, line: usize, key: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| bad(file, line, format!("{key}: {v:?} is not a number")))
}

/// A file's entries, and every key the parser asked for (what it accepts is what
/// it reads).
struct Reader {
    map: BTreeMap<String, (String, usize)>,
    /// Global keys asked for.
    global: RefCell<BTreeSet<String>>,
    /// Per-server suffixes asked for (`address`, `unit_`).
    suffixes: RefCell<BTreeSet<String>>,
    /// Every full key asked for, and the prefixes (`imap1_unit_`) whose keys were read.
    asked: RefCell<BTreeSet<String>>,
    prefixes: RefCell<Vec<String>>,
}

impl Reader {
    fn new(all: Vec<(String, String, usize)>) -> Reader {
        let mut map = BTreeMap::new();
        for (k, v, l) in all {
            map.insert(k, (v, l));
        }
        Reader {
            map,
            global: RefCell::default(),
            suffixes: RefCell::default(),
            asked: RefCell::default(),
            prefixes: RefCell::default(),
        }
    }

    fn value(&self, k: &str) -> Option<(&str, usize)> {
        self.asked.borrow_mut().insert(k.to_string());
        self.map.get(k).map(|(v, l)| (v.as_str(), *l))
    }

    /// A global key's value and line.
    fn get(&self, k: &str) -> Option<(&str, usize)> {
        self.global.borrow_mut().insert(k.to_string());
        self.value(k)
    }

    /// Server `name`'s key `<name>_<suffix>`.
    fn server(&self, name: &str, suffix: &str) -> Option<(&str, usize)> {
        self.suffixes.borrow_mut().insert(suffix.to_string());
        self.value(&format!("{name}_{suffix}"))
    }

    /// Server `name`'s keys `<name>_<suffix><rest>`, as `(rest, value)`.
    fn server_prefixed(&self, name: &str, suffix: &str) -> BTreeMap<String, String> {
        self.suffixes.borrow_mut().insert(suffix.to_string());
        let prefix = format!("{name}_{suffix}");
        let found = self
            .map
            .iter()
            .filter_map(|(k, (v, _))| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
            .collect();
        self.prefixes.borrow_mut().push(prefix);
        found
    }

    /// The first key (in file order) the parser never asked for.
    fn unknown(&self) -> Option<(&str, usize)> {
        let asked = self.asked.borrow();
        let prefixes = self.prefixes.borrow();
        self.map
            .iter()
            .filter(|(k, _)| {
                !asked.contains(k.as_str()) && !prefixes.iter().any(|p| k.starts_with(p.as_str()))
            })
            .map(|(k, (_, l))| (k.as_str(), *l))
            .min_by_key(|(_, l)| *l)
    }
}

/// Parse the text of a `cyrvault.conf`; `file` names it in errors. `database`
/// defaults to `sqlite:<first vault>/fleet.db`. A key the parser does not read is
/// an error (a misspelt `prune_keep_*` would otherwise prune by another policy).
pub fn parse_fleet_conf(text: &str, file: &str) -> Result<FleetConf> {
    let reader = Reader::new(entries(text, file)?);
    let conf = parse(&reader, file)?;
    if let Some((k, l)) = reader.unknown() {
        return Err(bad(
            file,
            l,
            format!("unknown key {k:?} (cyrvault.conf(5) lists the keys)"),
        ));
    }
    Ok(conf)
}

fn parse(r: &Reader, file: &str) -> Result<FleetConf> {
    let get = |k: &str| r.get(k);
    let mut conf = FleetConf {
        servers: Vec::new(),
        vaults: Vec::new(),
        database: String::new(),
        workers: DEFAULT_WORKERS,
        jobs: 0,
        batch: DEFAULT_BATCH,
        unit_limit: 1,
        server_limit: 0,
        lease_secs: DEFAULT_LEASE,
        retry_backoff_secs: DEFAULT_BACKOFF,
        round_window_secs: DEFAULT_ROUND_WINDOW,
        stale_after_secs: DEFAULT_STALE_AFTER,
        metrics_file: get("metrics_file").map(|(v, _)| PathBuf::from(v)),
        retention: None,
    };
    if let Some((v, l)) = get("workers") {
        conf.workers = number(file, l, "workers", v)?;
    }
    if let Some((v, l)) = get("jobs") {
        conf.jobs = number(file, l, "jobs", v)?;
    }
    if let Some((v, l)) = get("batch") {
        conf.batch = number(file, l, "batch", v)?;
    }
    if let Some((v, l)) = get("unit_limit") {
        conf.unit_limit = number(file, l, "unit_limit", v)?;
    }
    if let Some((v, l)) = get("server_limit") {
        conf.server_limit = number(file, l, "server_limit", v)?;
    }
    if let Some((v, l)) = get("lease") {
        conf.lease_secs = number(file, l, "lease", v)?;
    }
    if let Some((v, l)) = get("retry_backoff") {
        conf.retry_backoff_secs = number(file, l, "retry_backoff", v)?;
    }
    if let Some((v, l)) = get("round_window") {
        conf.round_window_secs = number(file, l, "round_window", v)?;
    }
    if let Some((v, l)) = get("stale_after") {
        conf.stale_after_secs = number(file, l, "stale_after", v)?;
    }
    conf.retention = crate::retention::Policy::from_conf(|k| get(k).map(|x| x.0)).map_err(|e| {
        let line = e.split(':').next().and_then(&get).map_or(0, |x| x.1);
        bad(file, line, e)
    })?;
    for (key, min) in [
        ("workers", conf.workers),
        ("batch", conf.batch),
        ("unit_limit", conf.unit_limit),
    ] {
        if min == 0 {
            return Err(bad(
                file,
                get(key).map_or(0, |x| x.1),
                format!("{key} must be at least 1"),
            ));
        }
    }
    if conf.lease_secs == 0 {
        return Err(bad(
            file,
            get("lease").map_or(0, |x| x.1),
            "lease must be at least 1".into(),
        ));
    }
    let Some((vaults, _)) = get("vault") else {
        return Err(bad(
            file,
            0,
            "no `vault:` line (where archives live)".into(),
        ));
    };
    conf.vaults = vaults.split_whitespace().map(PathBuf::from).collect();
    if conf.vaults.is_empty() {
        return Err(bad(
            file,
            get("vault").map_or(0, |x| x.1),
            "`vault:` names no directory".into(),
        ));
    }
    conf.database = match get("database") {
        Some((v, _)) => v.to_string(),
        None => format!("sqlite:{}", conf.vaults[0].join("fleet.db").display()),
    };
    let Some((names, sl)) = get("servers") else {
        return Err(bad(file, 0, "no `servers:` line".into()));
    };
    for name in names.split_whitespace() {
        let name = name.to_ascii_lowercase();
        let Some((address, _)) = r.server(&name, "address") else {
            return Err(bad(
                file,
                sl,
                format!("server {name} has no `{name}_address:` line"),
            ));
        };
        let units = r.server_prefixed(&name, "unit_");
        let shared = match r.server(&name, "shared") {
            None => true,
            Some((v, l)) => match v.to_ascii_lowercase().as_str() {
                "yes" | "on" | "true" | "1" => true,
                "no" | "off" | "false" | "0" => false,
                _ => {
                    return Err(bad(
                        file,
                        l,
                        format!("{name}_shared: {v:?} is not yes or no"),
                    ));
                }
            },
        };
        let tls = tls_of(&name, r, file)?;
        conf.servers.push(ServerConf {
            tls,
            shared,
            address: address.to_string(),
            secret_file: r
                .server(&name, "secret_file")
                .map(|(v, _)| PathBuf::from(v)),
            servername: r.server(&name, "servername").map(|(v, _)| v.to_string()),
            units,
            name,
        });
    }
    if conf.servers.is_empty() {
        return Err(bad(file, sl, "`servers:` names no server".into()));
    }
    Ok(conf)
}

/// A server's TLS settings: its own keys, else the global ones.
fn tls_of(name: &str, r: &Reader, file: &str) -> Result<Option<ClientOptions>> {
    let own = |key: &str| r.server(name, key);
    // the global key is read (and so accepted) even where the server's own wins
    let either = |key: &str| {
        let global = r.get(key);
        own(key).or(global)
    };
    let on = match either("tls") {
        None => false,
        Some((v, l)) => match v.to_ascii_lowercase().as_str() {
            "yes" | "on" | "true" | "1" => true,
            "no" | "off" | "false" | "0" => false,
            _ => return Err(bad(file, l, format!("{name}_tls: {v:?} is not yes or no"))),
        },
    };
    let pin = match own("tls_pin") {
        None => None,
        Some((v, l)) => {
            Some(parse_pin(v).map_err(|m| bad(file, l, format!("{name}_tls_pin: {m}")))?)
        }
    };
    let ca_file = either("tls_ca_file").map(|(v, _)| PathBuf::from(v));
    let server_name = own("tls_server_name").map(|(v, _)| v.to_string());
    if !on && pin.is_none() && own("tls_ca_file").is_none() {
        return Ok(None);
    }
    Ok(Some(ClientOptions {
        ca_file,
        pin,
        server_name,
    }))
}

/// Read and parse `path`.
pub fn load_fleet_conf(path: &Path) -> Result<FleetConf> {
    let text = std::fs::read_to_string(path).at("reading", path)?;
    parse_fleet_conf(&text, &path.display().to_string())
}

impl FleetConf {
    /// Users one worker backs up at once: `jobs`, or the number of cores when 0.
    pub fn worker_jobs(&self) -> usize {
        if self.jobs == 0 {
            crate::backup::default_jobs()
        } else {
            self.jobs
        }
    }

    /// The server called `name`.
    pub fn server(&self, name: &str) -> Option<&ServerConf> {
        self.servers.iter().find(|s| s.name == name)
    }
}

impl ServerConf {
    /// The secret from `secret_file`, checked as the service checks its own (mode,
    /// length: `secret::Secret::load`).
    pub fn secret(&self) -> Result<Option<Secret>> {
        match &self.secret_file {
            None => Ok(None),
            Some(p) => Secret::load(p, &format!("{}_secret_file", self.name))
                .map(Some)
                .map_err(Error::from),
        }
    }

    /// The drive unit of partition `part` whose filesystem device is `dev`: the
    /// override if configured, else `dev<st_dev>` (two partitions on one device
    /// are one unit).
    pub fn unit_of(&self, part: &str, dev: u64) -> String {
        match self.units.get(part) {
            Some(u) => u.clone(),
            None => format!("dev{dev}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# fleet\nservers: imap1 IMAP2\nimap1_address: 127.0.0.1:1\n\
        imap1_secret_file: /s1\nimap1_unit_p2: diskb  # override\nimap2_address: h:2\n\
        imap2_servername: other\nvault: /v1 /v2\nworkers: 4\nbatch: 7\nunit_limit: 2\n\
        server_limit: 3\nlease: 30\nretry_backoff: 5\njobs: 3\n";

    #[test]
    fn parses_servers_limits_and_overrides() {
        let c = parse_fleet_conf(SAMPLE, "t.conf").unwrap();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.servers[0].name, "imap1");
        assert_eq!(c.servers[0].secret_file.as_deref(), Some(Path::new("/s1")));
        assert_eq!(c.servers[0].unit_of("p2", 9), "diskb");
        assert_eq!(c.servers[0].unit_of("p1", 9), "dev9");
        assert_eq!(c.servers[1].name, "imap2");
        assert_eq!(c.servers[1].servername.as_deref(), Some("other"));
        assert_eq!(c.vaults, [PathBuf::from("/v1"), PathBuf::from("/v2")]);
        assert_eq!(c.database, "sqlite:/v1/fleet.db");
        assert_eq!(
            (c.workers, c.batch, c.unit_limit, c.server_limit),
            (4, 7, 2, 3)
        );
        assert_eq!((c.lease_secs, c.retry_backoff_secs), (30, 5));
        assert_eq!((c.jobs, c.worker_jobs()), (3, 3));
        assert_eq!((c.stale_after_secs, c.metrics_file), (93600, None));
        let c = parse_fleet_conf(
            "servers: a\na_address: x:1\nvault: /v\nstale_after: 60\nmetrics_file: /m.prom\n",
            "f",
        )
        .unwrap();
        assert_eq!(c.stale_after_secs, 60);
        assert_eq!(c.metrics_file.as_deref(), Some(Path::new("/m.prom")));
        assert_eq!(c.retention, None, "no prune_* key: no pruning");
    }

    #[test]
    fn retention_policy() {
        let c = parse_fleet_conf(
            "servers: a\na_address: x:1\nvault: /v\nprune_keep_daily: 7\n\
             prune_keep_monthly: unlimited\nprune_keep_deleted: 30d\n",
            "f",
        )
        .unwrap();
        let p = c.retention.unwrap();
        assert_eq!(p.keep_daily, Some(crate::retention::Count::N(7)));
        assert_eq!(p.keep_monthly, Some(crate::retention::Count::Unlimited));
        assert_eq!(p.keep_deleted, Some(30 * 86_400));
        let e = parse_fleet_conf(
            "servers: a\na_address: x:1\nvault: /v\nprune_keep_within: soon\n",
            "f",
        )
        .unwrap_err();
        assert!(e.to_string().contains("f:4: prune_keep_within"), "{e}");
    }

    #[test]
    fn defaults_and_errors_name_the_line() {
        let c = parse_fleet_conf("servers: a\na_address: x:1\nvault: /v\n", "f").unwrap();
        assert_eq!(
            (c.workers, c.batch, c.unit_limit, c.server_limit),
            (12, 50, 1, 0)
        );
        assert_eq!(c.jobs, 0);
        assert_eq!(c.worker_jobs(), crate::backup::default_jobs());
        let e = parse_fleet_conf("servers: a\nvault: /v\n", "f").unwrap_err();
        assert!(
            e.to_string().contains("f:1: server a has no `a_address:`"),
            "{e}"
        );
        let e =
            parse_fleet_conf("servers: a\na_address: x\nvault: /v\nbatch: x\n", "f").unwrap_err();
        assert!(e.to_string().contains("f:4: batch"), "{e}");
        assert!(
            c.servers[0].shared,
            "shared mailboxes are backed up by default"
        );
        let c =
            parse_fleet_conf("servers: a\na_address: x:1\nvault: /v\na_shared: no\n", "f").unwrap();
        assert!(!c.servers[0].shared);
        let e = parse_fleet_conf(
            "servers: a\na_address: x\nvault: /v\na_shared: maybe\n",
            "f",
        )
        .unwrap_err();
        assert!(e.to_string().contains("f:4: a_shared"), "{e}");
        // a key the parser does not read is refused, naming it and its line
        let e = parse_fleet_conf(
            "servers: a\na_address: x:1\nvault: /v\nprune_keep_dialy: 7\n",
            "f",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("f:4: unknown key \"prune_keep_dialy\""),
            "{e}"
        );
        let e = parse_fleet_conf("servers: a\na_address: x:1\nvault: /v\nb_address: y\n", "f")
            .unwrap_err();
        assert!(
            e.to_string().contains("f:4: unknown key \"b_address\""),
            "{e}"
        );
        assert!(parse_fleet_conf("nonsense\n", "f").is_err());
        assert!(parse_fleet_conf("servers: a\na_address: x\n", "f").is_err());
    }

    #[test]
    fn accepted_keys_are_the_keys_the_parser_reads() {
        let k = accepted_keys();
        for g in [
            "servers",
            "vault",
            "metrics_file",
            "prune_keep_daily",
            "prune_keep_deleted",
        ] {
            assert!(k.global.contains(g), "{g}: {k:?}");
        }
        for s in ["address", "secret_file", "servername", "shared", "unit_"] {
            assert!(k.per_server.contains(s), "{s}: {k:?}");
        }
        // and every one of them parses (the sample sets them all)
        let mut text = String::from("servers: a\na_address: x:1\nvault: /v\n");
        for g in &k.global {
            if !["servers", "vault"].contains(&g.as_str()) {
                let v = if g == "database" {
                    "sqlite:/d"
                } else if g.ends_with("within") || g.ends_with("deleted") {
                    "1d"
                } else if g == "metrics_file" {
                    "/m"
                } else {
                    "1"
                };
                text.push_str(&format!("{g}: {v}\n"));
            }
        }
        for s in &k.per_server {
            if s != "address" {
                let pin = "ab".repeat(32);
                let v = match s.as_str() {
                    "shared" | "tls" => "yes",
                    "tls_pin" => pin.as_str(),
                    _ => "v",
                };
                text.push_str(&format!(
                    "a_{s}{}: {v}\n",
                    if s == "unit_" { "p1" } else { "" }
                ));
            }
        }
        parse_fleet_conf(&text, "f").unwrap();
    }
}
