//! Which runs a policy keeps: restic's `forget --keep-*` vocabulary and semantics
//! (restic 0.16, `internal/restic/snapshot_policy.go`), applied to one user's runs.
//!
//! Runs are walked newest first. `--keep-last N` keeps the N newest. `--keep-hourly`,
//! `-daily`, `-weekly`, `-monthly`, `-yearly N` each keep the newest run of each of the
//! last N hours/days/ISO weeks/months/years *that have a run* (calendar periods in the
//! backup host's local time zone, as restic uses the snapshot's local time). When a
//! bucket still has count left after the oldest run, the oldest run is kept for it
//! too (restic keeps the oldest snapshot "if there are not enough snapshots to keep
//! one for each" period). `--keep-within D` keeps every run that started within D of
//! the *newest run* (not of now). A count may be `unlimited`. A run is kept if any
//! rule keeps it; the reasons are reported. cyrvault adds one rule: the newest run is
//! always kept (the next backup is incremental against it).
//!
//! `--keep-deleted D` does not choose runs: it bounds how long deleted folders and
//! expunged messages stay restorable (see `plan.rs`). A policy with only it keeps
//! every run.
#![forbid(unsafe_code)]

use serde::Serialize;

use super::error::{Result, RetentionError};
use crate::time::civil_from_days;

/// How many of a bucket to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Count {
    /// Keep this many.
    N(u32),
    /// Keep all.
    Unlimited,
}

impl Count {
    /// `N` or `unlimited` (restic spells `-1` that way too).
    pub fn parse(s: &str) -> Result<Count> {
        match s.trim() {
            "unlimited" | "-1" => Ok(Count::Unlimited),
            t => t.parse().map(Count::N).map_err(|_| {
                RetentionError::refused(format!("keep count {s:?}: a number or `unlimited`"))
            }),
        }
    }

    fn active(self) -> bool {
        self != Count::N(0)
    }
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::N(n) => write!(f, "{n}"),
            Count::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// A retention policy (`cyrvault prune --keep-*`, or `prune_keep_*` in cyrvault.conf).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub keep_last: Option<Count>,
    pub keep_hourly: Option<Count>,
    pub keep_daily: Option<Count>,
    pub keep_weekly: Option<Count>,
    pub keep_monthly: Option<Count>,
    pub keep_yearly: Option<Count>,
    /// Seconds: keep every run that started within this of the newest run.
    pub keep_within: Option<u64>,
    /// Seconds: deleted folders and expunged messages stay restorable this long after
    /// the run that found them gone, then they leave every run (doc/retention.md).
    pub keep_deleted: Option<u64>,
}

/// A run as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTime {
    pub run: u64,
    /// Unix seconds (the run's start).
    pub started: i64,
    /// The local time zone's offset from UTC at that instant, in seconds.
    pub utc_offset: i64,
}

/// What the policy says of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub run: u64,
    pub started: i64,
    pub keep: bool,
    /// Which rules keep it (`last`, `daily 2026-11-29`, `within`, `newest`, ...).
    pub reasons: Vec<String>,
}

impl Policy {
    /// The policy of `cyrvault.conf` (`prune_keep_last`, ..., `prune_keep_within`,
    /// `prune_keep_deleted`), `get` giving a key's value; `None` when no such key is
    /// set (then `cyrvault run` prunes nothing). `Err` names the bad key.
    pub fn from_conf<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> std::result::Result<Option<Policy>, String> {
        let count = |k: &str| -> std::result::Result<Option<Count>, String> {
            get(k)
                .map(|v| {
                    Count::parse(v)
                        .map_err(|_| format!("{k}: {v:?} is not a number or `unlimited`"))
                })
                .transpose()
        };
        let dur = |k: &str| -> std::result::Result<Option<u64>, String> {
            get(k)
                .map(|v| {
                    crate::time::parse_duration(v)
                        .ok_or_else(|| format!("{k}: {v:?} is not a duration (30d, 12h, 1y)"))
                })
                .transpose()
        };
        let p = Policy {
            keep_last: count("prune_keep_last")?,
            keep_hourly: count("prune_keep_hourly")?,
            keep_daily: count("prune_keep_daily")?,
            keep_weekly: count("prune_keep_weekly")?,
            keep_monthly: count("prune_keep_monthly")?,
            keep_yearly: count("prune_keep_yearly")?,
            keep_within: dur("prune_keep_within")?,
            keep_deleted: dur("prune_keep_deleted")?,
        };
        Ok((!p.is_empty()).then_some(p))
    }

    /// Whether any rule chooses runs (`keep_deleted` alone does not).
    pub fn chooses_runs(&self) -> bool {
        self.keep_within.is_some()
            || [
                self.keep_last,
                self.keep_hourly,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
                self.keep_yearly,
            ]
            .iter()
            .flatten()
            .any(|c| c.active())
    }

    /// Whether the policy says anything at all.
    pub fn is_empty(&self) -> bool {
        !self.chooses_runs() && self.keep_deleted.is_none()
    }

    /// The policy in words, restic-style: `keep 7 daily, 1 monthly; deleted 30d`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (name, c) in [
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        ] {
            if let Some(c) = c.filter(|c| c.active()) {
                parts.push(format!("{c} {name}"));
            }
        }
        if let Some(w) = self.keep_within {
            parts.push(format!("within {}", duration(w)));
        }
        let mut s = if parts.is_empty() {
            "keep every run".to_string()
        } else {
            format!("keep {}", parts.join(", "))
        };
        if let Some(d) = self.keep_deleted {
            s.push_str(&format!("; deleted content {}", duration(d)));
        }
        s
    }

    /// Decide every run (any order in, newest first out). Refuses an empty policy
    /// (restic does too: nothing to go by).
    pub fn select(&self, runs: &[RunTime]) -> Result<Vec<Decision>> {
        if self.is_empty() {
            return Err(RetentionError::refused(
                "no policy: give at least one --keep-* option (or prune_keep_* in cyrvault.conf)"
                    .into(),
            ));
        }
        let mut list = runs.to_vec();
        list.sort_by_key(|r| std::cmp::Reverse((r.started, r.run)));
        let newest = list.first().map(|r| r.started);
        let keep_all = !self.chooses_runs();
        struct Bucket {
            name: &'static str,
            count: Count,
            last: Option<i64>,
            of: fn(&RunTime, usize) -> i64,
        }
        let mut buckets: Vec<Bucket> = [
            (
                "last",
                self.keep_last,
                by_index as fn(&RunTime, usize) -> i64,
            ),
            ("hourly", self.keep_hourly, hour),
            ("daily", self.keep_daily, day),
            ("weekly", self.keep_weekly, week),
            ("monthly", self.keep_monthly, month),
            ("yearly", self.keep_yearly, year),
        ]
        .into_iter()
        .filter_map(|(name, c, of)| {
            c.filter(|c| c.active()).map(|count| Bucket {
                name,
                count,
                last: None,
                of,
            })
        })
        .collect();
        let mut out = Vec::with_capacity(list.len());
        for (i, r) in list.iter().enumerate() {
            let mut reasons = Vec::new();
            if keep_all {
                reasons.push("no run policy".to_string());
            }
            if i == 0 {
                reasons.push("newest".to_string());
            }
            if let (Some(w), Some(n)) = (self.keep_within, newest)
                && n.saturating_sub(r.started) < i64::try_from(w).unwrap_or(i64::MAX)
            {
                reasons.push("within".to_string());
            }
            let oldest = i + 1 == list.len();
            for b in &mut buckets {
                if b.count == Count::N(0) {
                    continue;
                }
                let v = (b.of)(r, i);
                if b.last != Some(v) || oldest {
                    let tag = if b.last == Some(v) { " (oldest)" } else { "" };
                    b.last = Some(v);
                    if let Count::N(n) = &mut b.count {
                        *n -= 1;
                    }
                    reasons.push(format!("{} {}{tag}", b.name, label(b.name, r)));
                }
            }
            out.push(Decision {
                run: r.run,
                started: r.started,
                keep: !reasons.is_empty(),
                reasons,
            });
        }
        Ok(out)
    }
}

/// A duration for humans: `30d`, `36h`, `90m`, `45s`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn local(r: &RunTime) -> i64 {
    r.started.saturating_add(r.utc_offset)
}

fn by_index(_: &RunTime, i: usize) -> i64 {
    i as i64
}

fn hour(r: &RunTime, _: usize) -> i64 {
    local(r).div_euclid(3600)
}

fn day(r: &RunTime, _: usize) -> i64 {
    local(r).div_euclid(86_400)
}

/// ISO 8601 week as `year * 100 + week` (weeks start on Monday; week 1 holds the
/// year's first Thursday).
fn week(r: &RunTime, _: usize) -> i64 {
    let (y, w) = iso_week(local(r).div_euclid(86_400));
    y * 100 + w
}

fn month(r: &RunTime, _: usize) -> i64 {
    let (y, m, _) = civil_from_days(local(r).div_euclid(86_400));
    y * 100 + m
}

fn year(r: &RunTime, _: usize) -> i64 {
    civil_from_days(local(r).div_euclid(86_400)).0
}

/// ISO year and week of a day number (days since 1970-01-01, a Thursday).
pub(crate) fn iso_week(days: i64) -> (i64, i64) {
    let weekday = (days + 3).rem_euclid(7); // Monday = 0
    let thursday = days - weekday + 3;
    let (y, _, _) = civil_from_days(thursday);
    let jan1 = crate::time::days_from_civil(y, 1, 1);
    (y, (thursday - jan1) / 7 + 1)
}

fn label(bucket: &str, r: &RunTime) -> String {
    let d = local(r).div_euclid(86_400);
    let (y, m, day) = civil_from_days(d);
    match bucket {
        "hourly" => format!(
            "{y:04}-{m:02}-{day:02} {:02}h",
            local(r).rem_euclid(86_400) / 3600
        ),
        "daily" => format!("{y:04}-{m:02}-{day:02}"),
        "weekly" => {
            let (iy, w) = iso_week(d);
            format!("{iy:04}-W{w:02}")
        }
        "monthly" => format!("{y:04}-{m:02}"),
        "yearly" => format!("{y:04}"),
        _ => format!("run {}", r.run),
    }
}

/// The local zone's UTC offset at each instant, by the machine's zone rules (GNU
/// `date`, one process for all: `doc/admin.md` explains why not a TZ reader). If
/// `date` fails, UTC (offset 0) with a warning.
pub fn local_offsets(times: &[i64]) -> Vec<i64> {
    use std::io::Write;
    if times.is_empty() {
        return Vec::new();
    }
    let input: String = times.iter().map(|t| format!("@{t}\n")).collect();
    let run = || -> Option<Vec<i64>> {
        let mut child = std::process::Command::new("date")
            .args(["-f", "-", "+%z"])
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(input.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        if !out.status.success() {
            return None;
        }
        let v: Vec<i64> = std::str::from_utf8(&out.stdout)
            .ok()?
            .lines()
            .map(|l| {
                let sign = if l.starts_with('-') { -1 } else { 1 };
                let d: i64 = l.get(1..)?.parse().ok()?;
                Some(sign * ((d / 100) * 3600 + (d % 100) * 60))
            })
            .collect::<Option<_>>()?;
        (v.len() == times.len()).then_some(v)
    };
    run().unwrap_or_else(|| {
        log::warn!(target: "cyrvault::retention", "GNU date gave no zone offsets: using UTC");
        vec![0; times.len()]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::unix_from_civil;

    fn at(run: u64, y: i64, m: i64, d: i64, h: i64) -> RunTime {
        RunTime {
            run,
            started: unix_from_civil(y, m, d, h, 0, 0),
            utc_offset: 0,
        }
    }

    fn kept(p: &Policy, runs: &[RunTime]) -> Vec<u64> {
        let mut v: Vec<u64> = p
            .select(runs)
            .unwrap()
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.run)
            .collect();
        v.sort();
        v
    }

    /// The forum example of restic's docs: a1 May 1 8h, a2 May 2 8h, a3 May 2 11h,
    /// a4 May 4 9h, a5 May 5 10h; `--keep-daily 4` keeps a1 a3 a4 a5.
    #[test]
    fn keep_daily_counts_days_that_have_runs() {
        let runs = [
            at(1, 2025, 5, 1, 8),
            at(2, 2025, 5, 2, 8),
            at(3, 2025, 5, 2, 11),
            at(4, 2025, 5, 4, 9),
            at(5, 2025, 5, 5, 10),
        ];
        let p = Policy {
            keep_daily: Some(Count::N(4)),
            ..Default::default()
        };
        assert_eq!(kept(&p, &runs), [1, 3, 4, 5]);
        // Within 4d of the newest run (May 5 10h): from May 1 10h on.
        let p = Policy {
            keep_within: Some(4 * 86_400),
            ..Default::default()
        };
        assert_eq!(kept(&p, &runs), [2, 3, 4, 5]);
        let p = Policy {
            keep_last: Some(Count::N(2)),
            ..Default::default()
        };
        assert_eq!(kept(&p, &runs), [4, 5]);
    }

    #[test]
    fn thirty_days_keep_daily_7_monthly_1() {
        // One run a day from 2026-11-01 to 2026-11-30.
        let runs: Vec<RunTime> = (1..=30).map(|d| at(d, 2026, 11, d as i64, 2)).collect();
        let p = Policy {
            keep_daily: Some(Count::N(7)),
            keep_monthly: Some(Count::N(1)),
            ..Default::default()
        };
        // The last 7 days; the monthly bucket's one is November's newest (run 30), so
        // its count is used up and the oldest is not kept.
        assert_eq!(kept(&p, &runs), [24, 25, 26, 27, 28, 29, 30]);
        let p = Policy {
            keep_daily: Some(Count::N(7)),
            keep_monthly: Some(Count::N(2)),
            ..Default::default()
        };
        // A second month is wanted and there is none: the oldest run is kept for it.
        assert_eq!(kept(&p, &runs), [1, 24, 25, 26, 27, 28, 29, 30]);
        let d = p.select(&runs).unwrap();
        let oldest = d.iter().find(|d| d.run == 1).unwrap();
        assert_eq!(oldest.reasons, ["monthly 2026-11 (oldest)"]);
    }

    #[test]
    fn weeks_are_iso_and_zones_shift_days() {
        // 2026-01-01 is a Thursday: ISO week 2026-W01; 2025-12-29 (Monday) too.
        let d = crate::time::days_from_civil(2025, 12, 29);
        assert_eq!(iso_week(d), (2026, 1));
        assert_eq!(iso_week(d - 1), (2025, 52));
        assert_eq!(
            iso_week(crate::time::days_from_civil(2021, 1, 3)),
            (2020, 53)
        );
        // 23:30 UTC and 00:30 UTC+1 of the next day are one local day apart... or not.
        let a = RunTime {
            run: 1,
            started: unix_from_civil(2026, 3, 1, 23, 30, 0),
            utc_offset: 3600,
        };
        let b = RunTime {
            run: 2,
            started: unix_from_civil(2026, 3, 2, 10, 0, 0),
            utc_offset: 3600,
        };
        let p = Policy {
            keep_daily: Some(Count::N(1)),
            ..Default::default()
        };
        // In UTC+1 both are on March 2: one day, the newer wins.
        assert_eq!(kept(&p, &[a, b]), [2]);
    }

    #[test]
    fn unlimited_empty_and_keep_deleted_alone() {
        let runs: Vec<RunTime> = (1..=5).map(|d| at(d, 2026, 1, d as i64, 2)).collect();
        let p = Policy {
            keep_daily: Some(Count::Unlimited),
            ..Default::default()
        };
        assert_eq!(kept(&p, &runs), [1, 2, 3, 4, 5]);
        assert!(Policy::default().select(&runs).is_err());
        let p = Policy {
            keep_deleted: Some(86_400),
            ..Default::default()
        };
        assert_eq!(kept(&p, &runs), [1, 2, 3, 4, 5]);
        let p = Policy {
            keep_last: Some(Count::N(0)),
            ..Default::default()
        };
        assert!(p.select(&runs).is_err(), "keep-last 0 says nothing");
        assert_eq!(Count::parse("unlimited").unwrap(), Count::Unlimited);
        assert_eq!(Count::parse("3").unwrap(), Count::N(3));
        assert!(Count::parse("x").is_err());
        assert_eq!(
            Policy {
                keep_daily: Some(Count::N(7)),
                keep_deleted: Some(30 * 86_400),
                ..Default::default()
            }
            .describe(),
            "keep 7 daily; deleted content 30d"
        );
    }

    #[test]
    fn local_offsets_come_from_the_zone_rules() {
        let v = local_offsets(&[0, 1_700_000_000]);
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|o| o.abs() <= 14 * 3600));
    }
}
