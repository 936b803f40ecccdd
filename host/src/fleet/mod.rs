//! The fleet: many IMAP servers backed up in one night by N worker processes.
//!
//! - `config.rs`: `cyrvault.conf` (servers, vaults, database, limits);
//! - `sql.rs`: the SQL trait and its SQLite and PostgreSQL backends;
//! - `directory.rs`: servers, drive units, users, rounds, claims (leases), attempts;
//! - `report.rs`: the round's summary per server and unit, failures, claim trace;
//! - `discover.rs`: asks each server's `cyrvaultd` (`USERS`, `PARTITIONS`) which
//!   users it has, on which partition, on which filesystem device (drive unit);
//! - `worker.rs`: one worker process: claim a batch on one unit, back each user up
//!   (`backup::backup_user`), record, release, until nothing is left;
//! - `run.rs`: `cyrvault run`: starts the workers as processes, replaces one that
//!   dies while work is left, turns their event lines into progress, and sums up;
//! - `metrics.rs`: the fleet's health as Prometheus text (`cyrvault metrics`, after
//!   each run, and `exporter.rs`: `cyrvault run --metrics-listen`).
//!
//! See `doc/fleet.md`.
#![forbid(unsafe_code)]

pub mod config;
pub mod directory;
pub mod discover;
pub mod exporter;
pub mod metrics;
pub mod report;
pub mod run;
pub mod sql;
pub mod worker;

pub use config::{FleetConf, ServerConf, load_fleet_conf, parse_fleet_conf};
pub use directory::{Batch, Directory, Limits, Transfer, UnitSummary};
pub use discover::discover;
pub use run::{RunOptions, RunSummary, run_fleet};
pub use worker::{Event, work};

use crate::error::Result;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Open the directory `conf.database` names.
pub fn open_directory(conf: &FleetConf) -> Result<Directory> {
    Directory::open(sql::connect(&conf.database)?)
}

/// `round_window` in ms.
pub fn round_window_ms(conf: &FleetConf) -> i64 {
    i64::try_from(conf.round_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// The scheduler limits of `conf`.
pub fn limits(conf: &FleetConf) -> Limits {
    Limits {
        batch: conf.batch,
        unit_limit: conf.unit_limit,
        server_limit: conf.server_limit,
        lease_ms: i64::try_from(conf.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
    }
}
