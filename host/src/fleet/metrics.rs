//! The fleet's health as Prometheus text (exposition format 0.0.4): per drive unit,
//! per server and for the whole fleet, the newest round's users backed up and failed,
//! bytes fetched and stored and its duration, and, whatever round, the oldest good
//! backup and the users without a recent one. Read from the user directory, so every
//! backup host sharing it reports the same figures.
//!
//! `cyrvault metrics` prints or writes it (atomically, for node_exporter's textfile
//! collector), `cyrvault run` writes it after each run when `metrics_file` is set, and
//! `cyrvault run --metrics-listen` serves it while running (`exporter.rs`), with the
//! running process's own counters (`cyrvault_run_*`) added. The names, their meaning
//! and example alerts are in doc/operations.md.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::config::FleetConf;
use super::directory::Directory;
use super::report::{RoundInfo, UnitHealth, UnitSummary};
use super::worker::Event;
use crate::error::{IoContext, Result};

/// What the directory says, read once.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was read, ms since the epoch.
    pub generated_ms: i64,
    /// The `stale_after` the stale counts were computed with, seconds.
    pub stale_after_secs: u64,
    /// The newest round (None before the first run).
    pub round: Option<RoundInfo>,
    /// The newest round per unit.
    pub units: Vec<UnitSummary>,
    /// Every unit's coverage.
    pub health: Vec<UnitHealth>,
}

/// Read everything the metrics need from the directory: three queries (rounds, the
/// per-unit round summary, the per-unit coverage), each one pass over `users`.
pub fn collect(dir: &mut Directory, now_ms: i64, stale_after_secs: u64) -> Result<Snapshot> {
    let round = dir.round_info()?;
    let units = match round {
        Some(r) => dir.summary(r.id)?,
        None => Vec::new(),
    };
    let stale_ms = i64::try_from(stale_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let health = dir.health(now_ms.saturating_sub(stale_ms))?;
    Ok(Snapshot {
        generated_ms: now_ms,
        stale_after_secs,
        round,
        units,
        health,
    })
}

/// What one `cyrvault run` process has done so far (its event stream, counted).
#[derive(Debug, Clone, Default)]
pub struct LiveRun {
    /// When the run started, ms.
    pub started_ms: i64,
    /// Users the round had left to try when the run started.
    pub to_try: u64,
    /// Users this run backed up.
    pub ok: u64,
    /// Users whose backup failed in this run.
    pub failed: u64,
    /// Users this run backed up whose retention prune after the backup failed.
    pub prune_failed: u64,
    /// Message bytes fetched.
    pub fetched: u64,
    /// Bytes the archives grew by.
    pub stored: u64,
    /// Worker processes that died.
    pub workers_died: u64,
    /// Still running.
    pub in_progress: bool,
    /// The exit status, once finished.
    pub exit_status: Option<u8>,
}

impl LiveRun {
    /// A run starting now with `to_try` users left in the round.
    pub fn start(now_ms: i64, to_try: u64) -> LiveRun {
        LiveRun {
            started_ms: now_ms,
            to_try,
            in_progress: true,
            ..LiveRun::default()
        }
    }

    /// Count one event of the run.
    pub fn event(&mut self, ev: &Event) {
        match ev {
            Event::Done {
                ok,
                bytes,
                stored,
                prune_class,
                ..
            } => {
                if *ok {
                    self.ok += 1;
                    self.prune_failed += u64::from(prune_class.is_some());
                    self.fetched = self.fetched.saturating_add(*bytes);
                    self.stored = self.stored.saturating_add(*stored);
                } else {
                    self.failed += 1;
                }
            }
            Event::WorkerDied { .. } => self.workers_died += 1,
            _ => {}
        }
    }

    /// The run ended with `status`.
    pub fn finish(&mut self, status: u8) {
        self.in_progress = false;
        self.exit_status = Some(status);
    }
}

/// One row of figures, for a unit, a server or the fleet.
#[derive(Debug, Clone, Default)]
struct Group {
    users: i64,
    tried: i64,
    ok: i64,
    failed: i64,
    prune_failed: i64,
    fetched: i64,
    stored: i64,
    first_start: Option<i64>,
    last_end: Option<i64>,
    oldest_success: Option<i64>,
    never: i64,
    stale: i64,
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Group {
    fn add(&mut self, o: &Group) {
        self.users += o.users;
        self.tried += o.tried;
        self.ok += o.ok;
        self.failed += o.failed;
        self.prune_failed += o.prune_failed;
        self.fetched = self.fetched.saturating_add(o.fetched);
        self.stored = self.stored.saturating_add(o.stored);
        self.first_start = min_opt(self.first_start, o.first_start);
        self.last_end = self.last_end.max(o.last_end);
        self.oldest_success = min_opt(self.oldest_success, o.oldest_success);
        self.never += o.never;
        self.stale += o.stale;
    }

    fn duration_ms(&self) -> i64 {
        match (self.first_start, self.last_end) {
            (Some(s), Some(e)) => e.saturating_sub(s).max(0),
            _ => 0,
        }
    }
}

/// Units keyed by `(server, unit name)`: the coverage of every unit, with the round's
/// figures where the unit had attempts.
fn units(s: &Snapshot) -> BTreeMap<(String, String), Group> {
    let mut out: BTreeMap<(String, String), Group> = BTreeMap::new();
    let key = |server: &str, unit: &str| {
        let name = unit
            .strip_prefix(server)
            .and_then(|u| u.strip_prefix('/'))
            .unwrap_or(unit);
        (server.to_string(), name.to_string())
    };
    for h in &s.health {
        let g = out.entry(key(&h.server, &h.unit)).or_default();
        g.users = h.users;
        g.oldest_success = h.oldest_success;
        g.never = h.never;
        g.stale = h.stale;
    }
    for u in &s.units {
        let g = out.entry(key(&u.server, &u.unit)).or_default();
        g.users = u.users;
        g.tried = u.tried;
        g.ok = u.ok;
        g.failed = u.failed;
        g.prune_failed = u.prune_failed;
        g.fetched = u.bytes;
        g.stored = u.stored;
        g.first_start = (u.first_start > 0).then_some(u.first_start);
        g.last_end = (u.last_end > 0).then_some(u.last_end);
    }
    out
}

/// A gauge or counter family being written: `# HELP`, `# TYPE`, then samples.
struct Text {
    out: String,
}

fn seconds(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

fn escape(v: &str) -> String {
    let mut e = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => e.push_str("\\\\"),
            '"' => e.push_str("\\\""),
            '\n' => e.push_str("\\n"),
            c => e.push(c),
        }
    }
    e
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: &str) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The per-level families: suffix, help, and the value (None: no sample).
type Figure = (
    &'static str,
    &'static str,
    fn(&Group, i64) -> Option<String>,
);

const FIGURES: &[Figure] = &[
    ("users", "Users in the directory (not gone).", |g, _| {
        Some(g.users.to_string())
    }),
    (
        "round_users_tried",
        "Users tried in the newest round so far.",
        |g, _| Some(g.tried.to_string()),
    ),
    (
        "round_users_backed_up",
        "Users backed up in the newest round (their last attempt in it succeeded).",
        |g, _| Some(g.ok.to_string()),
    ),
    (
        "round_users_failed",
        "Users whose last attempt in the newest round failed.",
        |g, _| Some(g.failed.to_string()),
    ),
    (
        "round_users_prune_failed",
        "Users backed up in the newest round whose retention prune after the backup failed.",
        |g, _| Some(g.prune_failed.to_string()),
    ),
    (
        "round_fetched_bytes",
        "Message bytes fetched from the IMAP servers in the newest round.",
        |g, _| Some(g.fetched.to_string()),
    ),
    (
        "round_stored_bytes",
        "Bytes the archives grew by in the newest round.",
        |g, _| Some(g.stored.to_string()),
    ),
    (
        "round_duration_seconds",
        "Newest round: first attempt's start to last attempt's end.",
        |g, _| Some(seconds(g.duration_ms())),
    ),
    (
        "oldest_good_backup_timestamp_seconds",
        "Oldest last good backup among users that have one (Unix time).",
        |g, _| g.oldest_success.map(seconds),
    ),
    (
        "oldest_good_backup_age_seconds",
        "Age of the oldest last good backup when these figures were read.",
        |g, now| {
            g.oldest_success
                .map(|t| seconds(now.saturating_sub(t).max(0)))
        },
    ),
    (
        "users_never_backed_up",
        "Users without any good backup.",
        |g, _| Some(g.never.to_string()),
    ),
    (
        "stale_users",
        "Users without a good backup for longer than stale_after (never backed up included).",
        |g, _| Some(g.stale.to_string()),
    ),
];

/// The Prometheus text of `snap`, plus the run's own counters when given.
pub fn render(snap: &Snapshot, live: Option<&LiveRun>) -> String {
    let mut t = Text { out: String::new() };
    let now = snap.generated_ms;
    t.one(
        "cyrvault_metrics_generated_timestamp_seconds",
        "gauge",
        "When these figures were read from the user directory (Unix time).",
        &seconds(now),
    );
    t.one(
        "cyrvault_stale_after_seconds",
        "gauge",
        "The stale_after the stale counts use.",
        &snap.stale_after_secs.to_string(),
    );
    if let Some(r) = snap.round {
        t.one(
            "cyrvault_round_number",
            "gauge",
            "Number of the newest fleet round (the round_* figures describe it).",
            &r.id.to_string(),
        );
        t.one(
            "cyrvault_round_start_timestamp_seconds",
            "gauge",
            "When the newest round started (Unix time).",
            &seconds(r.started),
        );
        t.one(
            "cyrvault_round_open",
            "gauge",
            "1 while the newest round is still open (a run is working on it, or was stopped).",
            if r.finished.is_some() { "0" } else { "1" },
        );
        if let Some(f) = r.finished {
            t.one(
                "cyrvault_round_end_timestamp_seconds",
                "gauge",
                "When the newest round was closed (Unix time).",
                &seconds(f),
            );
        }
    }
    let units = units(snap);
    let mut servers: BTreeMap<&str, Group> = BTreeMap::new();
    let mut fleet = Group::default();
    for ((server, _), g) in &units {
        servers.entry(server.as_str()).or_default().add(g);
        fleet.add(g);
    }
    for (suffix, help, value) in FIGURES {
        let name = format!("cyrvault_unit_{suffix}");
        t.family(&name, "gauge", &format!("Per drive unit: {}", lower(help)));
        for ((server, unit), g) in &units {
            if let Some(v) = value(g, now) {
                t.sample(&name, &[("server", server), ("unit", unit)], &v);
            }
        }
        let name = format!("cyrvault_server_{suffix}");
        t.family(&name, "gauge", &format!("Per server: {}", lower(help)));
        for (server, g) in &servers {
            if let Some(v) = value(g, now) {
                t.sample(&name, &[("server", server)], &v);
            }
        }
        let name = format!("cyrvault_fleet_{suffix}");
        t.family(&name, "gauge", &format!("Whole fleet: {}", lower(help)));
        if let Some(v) = value(&fleet, now) {
            t.sample(&name, &[], &v);
        }
    }
    if let Some(l) = live {
        render_live(&mut t, l, now);
    }
    t.out
}

fn lower(help: &str) -> String {
    let mut c = help.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn render_live(t: &mut Text, l: &LiveRun, now: i64) {
    t.one(
        "cyrvault_run_in_progress",
        "gauge",
        "1 while this cyrvault run is running.",
        if l.in_progress { "1" } else { "0" },
    );
    t.one(
        "cyrvault_run_start_timestamp_seconds",
        "gauge",
        "When this cyrvault run started (Unix time).",
        &seconds(l.started_ms),
    );
    t.one(
        "cyrvault_run_duration_seconds",
        "gauge",
        "How long this cyrvault run has been running (or ran).",
        &seconds(now.saturating_sub(l.started_ms).max(0)),
    );
    t.one(
        "cyrvault_run_users_to_try",
        "gauge",
        "Users the round had left to try when this run started.",
        &l.to_try.to_string(),
    );
    for (name, help, v) in [
        (
            "cyrvault_run_users_backed_up_total",
            "Users this run backed up.",
            l.ok,
        ),
        (
            "cyrvault_run_users_failed_total",
            "Users whose backup failed in this run.",
            l.failed,
        ),
        (
            "cyrvault_run_users_prune_failed_total",
            "Users this run backed up whose retention prune after the backup failed.",
            l.prune_failed,
        ),
        (
            "cyrvault_run_fetched_bytes_total",
            "Message bytes this run fetched.",
            l.fetched,
        ),
        (
            "cyrvault_run_stored_bytes_total",
            "Bytes this run added to the archives.",
            l.stored,
        ),
        (
            "cyrvault_run_workers_died_total",
            "Worker processes of this run that died (and were replaced).",
            l.workers_died,
        ),
    ] {
        t.one(name, "counter", help, &v.to_string());
    }
    if let Some(s) = l.exit_status {
        t.one(
            "cyrvault_run_exit_status",
            "gauge",
            "Exit status of the run that wrote this (0: every user tried was backed up).",
            &s.to_string(),
        );
    }
}

/// How long a scrape reuses the directory figures of the previous one (the queries
/// walk the users table: several Prometheus servers scraping at once do not each
/// cost that).
const REUSE_MS: i64 = 1000;

/// The page `cyrvault run --metrics-listen` serves: the directory's figures (read on
/// its own connection, at most every [`REUSE_MS`]) and the run's counters. If the
/// directory cannot be read, the last figures are served with
/// `cyrvault_directory_up 0`.
pub fn live_page(conf: FleetConf, live: Arc<Mutex<LiveRun>>) -> super::exporter::Page {
    let mut dir: Option<Directory> = None;
    let mut last: Option<Snapshot> = None;
    Box::new(move || {
        let now = super::now_ms();
        let fresh = last
            .as_ref()
            .is_some_and(|s| now.saturating_sub(s.generated_ms) < REUSE_MS);
        let mut up = true;
        if !fresh {
            let read = match dir.as_mut() {
                Some(d) => collect(d, now, conf.stale_after_secs),
                None => super::open_directory(&conf).and_then(|mut d| {
                    let s = collect(&mut d, now, conf.stale_after_secs);
                    dir = Some(d);
                    s
                }),
            };
            match read {
                Ok(s) => last = Some(s),
                Err(e) => {
                    log::warn!(target: "cyrvault::metrics", "reading the user directory: {e}");
                    dir = None;
                    up = false;
                }
            }
        }
        let empty = Snapshot {
            generated_ms: now,
            stale_after_secs: conf.stale_after_secs,
            round: None,
            units: Vec::new(),
            health: Vec::new(),
        };
        let snap = last.as_ref().unwrap_or(&empty);
        let run = live.lock().map(|l| l.clone()).unwrap_or_default();
        let mut text = render(snap, Some(&run));
        text.push_str(
            "# HELP cyrvault_directory_up 1 if the user directory could be read for this scrape.\n\
             # TYPE cyrvault_directory_up gauge\n",
        );
        text.push_str(if up {
            "cyrvault_directory_up 1\n"
        } else {
            "cyrvault_directory_up 0\n"
        });
        text
    })
}

/// Write `text` to `path` so that a reader sees the old file or the new one, never a
/// part: a temporary file beside it, fsync, rename over. Mode 0644 (node_exporter
/// runs as its own user).
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.at("writing the metrics file", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        let unit = |server: &str, unit: &str, tried, ok, bytes| UnitSummary {
            server: server.into(),
            unit: format!("{server}/{unit}"),
            users: 3,
            tried,
            ok,
            failed: tried - ok,
            prune_failed: i64::from(ok > 2),
            bytes,
            stored: bytes / 2,
            span_ms: 0,
            first_start: 1_000_000,
            last_end: 1_030_000,
        };
        let health = |server: &str, unit: &str, oldest, never| UnitHealth {
            server: server.into(),
            unit: format!("{server}/{unit}"),
            users: 3,
            oldest_success: oldest,
            never,
            stale: never,
        };
        Snapshot {
            generated_ms: 2_000_000,
            stale_after_secs: 93600,
            round: Some(RoundInfo {
                id: 4,
                started: 999_000,
                finished: None,
            }),
            units: vec![
                unit("imap1", "dev2049", 3, 3, 100),
                unit("imap1", "disk\"b", 2, 1, 10),
            ],
            health: vec![
                health("imap1", "dev2049", Some(1_500_000), 0),
                health("imap1", "disk\"b", None, 3),
                health("imap2", "dev7", Some(1_200_000), 1),
            ],
        }
    }

    fn value(text: &str, sample: &str) -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
            .to_string()
    }

    #[test]
    fn levels_add_up_and_labels_are_escaped() {
        let t = render(&snap(), None);
        assert_eq!(value(&t, "cyrvault_round_number"), "4");
        assert_eq!(value(&t, "cyrvault_round_open"), "1");
        assert_eq!(
            value(
                &t,
                "cyrvault_unit_round_users_failed{server=\"imap1\",unit=\"disk\\\"b\"}"
            ),
            "1"
        );
        assert_eq!(
            value(&t, "cyrvault_server_round_fetched_bytes{server=\"imap1\"}"),
            "110"
        );
        assert_eq!(value(&t, "cyrvault_fleet_round_stored_bytes"), "55");
        assert_eq!(
            value(
                &t,
                "cyrvault_unit_round_users_prune_failed{server=\"imap1\",unit=\"dev2049\"}"
            ),
            "1"
        );
        assert_eq!(value(&t, "cyrvault_fleet_round_users_prune_failed"), "1");
        assert_eq!(value(&t, "cyrvault_fleet_users"), "9");
        assert_eq!(value(&t, "cyrvault_fleet_stale_users"), "4");
        assert_eq!(
            value(&t, "cyrvault_fleet_oldest_good_backup_timestamp_seconds"),
            "1200.000"
        );
        assert_eq!(
            value(&t, "cyrvault_fleet_oldest_good_backup_age_seconds"),
            "800.000"
        );
        assert_eq!(
            value(
                &t,
                "cyrvault_server_round_duration_seconds{server=\"imap1\"}"
            ),
            "30.000"
        );
        // a unit without any good backup has no oldest-backup sample, but its users count
        assert!(!t.contains("oldest_good_backup_timestamp_seconds{server=\"imap1\",unit=\"disk"));
        // imap2 had no attempt in the round: zeros, not absent
        assert_eq!(
            value(&t, "cyrvault_server_round_users_tried{server=\"imap2\"}"),
            "0"
        );
        assert!(!t.contains("cyrvault_run_"), "no run section without a run");
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let mut live = LiveRun::start(1_000_000, 9);
        live.event(&Event::Done {
            worker: "w".into(),
            server: "imap1".into(),
            user: "u".into(),
            ok: true,
            bytes: 7,
            stored: 5,
            ms: 1,
            error: None,
            class: None,
            prune_error: Some("prune: damaged".into()),
            prune_class: Some(crate::error::ErrorKind::Data),
        });
        live.finish(65);
        let t = render(&snap(), Some(&live));
        assert_eq!(value(&t, "cyrvault_run_fetched_bytes_total"), "7");
        assert_eq!(value(&t, "cyrvault_run_users_backed_up_total"), "1");
        assert_eq!(value(&t, "cyrvault_run_users_prune_failed_total"), "1");
        assert_eq!(value(&t, "cyrvault_run_in_progress"), "0");
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for l in t.lines() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(name.clone()), "{name} twice");
                current = name;
            } else if let Some(rest) = l.strip_prefix("# TYPE ") {
                assert!(rest.starts_with(&format!("{current} ")), "{l}");
            } else {
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "sample outside its family: {l}");
                let v = l.rsplit(' ').next().unwrap();
                assert!(v.parse::<f64>().is_ok(), "{l}");
            }
        }
    }

    #[test]
    fn written_atomically() {
        let dir = std::env::temp_dir().join(format!("cyrvault-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cyrvault.prom");
        write_atomically(&p, "a 1\n").unwrap();
        write_atomically(&p, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a 2\n");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        let e = write_atomically(&dir.join("nope/x.prom"), "a 1\n").unwrap_err();
        assert!(e.to_string().contains("nope/x.prom"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
