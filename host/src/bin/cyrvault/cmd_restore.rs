//! `cyrvault restore USER [FOLDER...] [--at TIME | --run N] [--message GUID...]
//! (--imap HOST:PORT [--admin NAME] [--password-file F] | --to-mbox F | --to-maildir D |
//! --to-eml D) [--into TREE] [--include-expunged ...] [--seen] [--subscriptions]
//! [--sieve [HOST:PORT]] [--dry-run] [--json]`: find the user's archive in the vault,
//! plan (`restore::plan`), carry it out (`restore::imap` or `restore::export`), print
//! the dry-run steps, a summary or JSON, and exit non-zero (65) if anything failed.
//! The admin's password comes from a file or `CYRVAULT_IMAP_PASSWORD`, never argv.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use cyrvault::cyrus::Guid;
use cyrvault_host::error::{EX_DATAERR, EX_USAGE, Error, IoContext};
use cyrvault_host::imap::{Tls, TlsMode};
use cyrvault_host::restore::all::{AllOptions, AllTarget, restore_all};
use cyrvault_host::restore::exact::{ExactOptions, ExactTarget, restore_exact};
use cyrvault_host::restore::export::{ExportKind, export};
use cyrvault_host::restore::imap::{ImapOptions, ImapTarget, restore_to_imap};
use cyrvault_host::restore::{
    NoProgress, Progress, Selection, Source, When, catalog_path_for, plan,
};
use cyrvault_host::vault::Vault;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::RestoreArgs;
use crate::output;

/// The progress bar on stderr.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn total(&mut self, n: u64) {
        self.0.set_length(n);
    }
    fn tick(&mut self) {
        self.0.inc(1);
    }
}

fn usage(msg: String) -> Error {
    Error::refused(msg)
}

fn password(a: &RestoreArgs) -> Result<String, Error> {
    if let Some(p) = &a.password_file {
        let s = std::fs::read_to_string(p).at("reading the password file", p)?;
        return Ok(s.trim_end_matches(['\n', '\r']).to_string());
    }
    std::env::var("CYRVAULT_IMAP_PASSWORD").map_err(|_| {
        usage("give the admin's password with --password-file F or CYRVAULT_IMAP_PASSWORD".into())
    })
}

/// TLS for the IMAP connections (ManageSieve follows with STARTTLS): `--tls`,
/// `--tls-ca-file`, `--tls-pin` or `--tls-implicit`; None: plaintext.
fn imap_tls(a: &RestoreArgs) -> Result<Option<Tls>, Error> {
    Ok(crate::cmd_backup::tls_options(&a.tls)?
        .or_else(|| a.tls_implicit.then(Default::default))
        .map(|trust| Tls {
            mode: if a.tls_implicit {
                TlsMode::Implicit
            } else {
                TlsMode::StartTls
            },
            trust,
        }))
}

/// `--exact` speaks to sync_server in plaintext (our replication client has no
/// STARTTLS yet): refuse TLS flags rather than send the password in the clear while
/// the admin asked for TLS.
fn refuse_tls_for_exact(a: &RestoreArgs) -> Result<(), Error> {
    if imap_tls(a)?.is_some() {
        return Err(usage(
            "--exact does not speak TLS to sync_server: drop --tls/--tls-implicit/\
             --tls-ca-file/--tls-pin, or restore over --imap"
                .into(),
        ));
    }
    Ok(())
}

/// `restore --all`: every user of the vault, N at a time, a line per user on stderr
/// as each finishes, then the report.
fn run_all(a: &RestoreArgs) -> Result<ExitCode, Error> {
    let at =
        a.at.as_deref()
            .map(cyrvault_host::admin::parse_time)
            .transpose()?;
    let target = if a.exact {
        AllTarget::Exact(ExactTarget {
            addr: a.sync.clone().unwrap_or_default(),
            admin: a.admin.clone(),
            password: password(a)?,
            partition: a.partition.clone(),
        })
    } else {
        let Some(addr) = &a.imap else {
            return Err(usage(
                "--all needs --exact --sync HOST:PORT or --imap HOST:PORT".into(),
            ));
        };
        let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
        let sieve = match &a.sieve {
            Some(s) if !s.is_empty() => s.clone(),
            _ => format!("{host}:4190"),
        };
        AllTarget::Imap(
            ImapTarget {
                addr: addr.clone(),
                admin: a.admin.clone(),
                password: password(a)?,
                user: String::new(),
                tls: imap_tls(a)?,
            },
            // A whole server: everything comes back.
            ImapOptions {
                subscriptions: true,
                sieve: Some(sieve),
                ..ImapOptions::default()
            },
        )
    };
    let opts = AllOptions {
        jobs: a.jobs,
        sessions: 0,
        at,
        users: Vec::new(),
    };
    let quiet = a.json;
    let report = restore_all(&a.vault, &target, &opts, &|o, done, total| {
        if quiet {
            return;
        }
        let what = match (&o.error, &o.summary) {
            (Some(e), _) => format!("FAILED: {e}"),
            (None, Some(s)) if s.failed > 0 => format!("{} failures", s.failed),
            (None, Some(s)) if s.created + s.appended == 0 => "nothing missing".into(),
            (None, Some(s)) => format!(
                "{} folders, {} messages, {:.1} MB",
                s.created,
                s.appended,
                s.bytes as f64 / 1e6
            ),
            (None, None) => String::new(),
        };
        eprintln!(
            "[{done}/{total}] {} (run {}): {what}, {:.1} s",
            o.user, o.run, o.seconds
        );
    })?;
    let printed = if a.json {
        output::json(&report)
    } else {
        use std::io::Write;
        std::io::stdout().lock().write_all(
            format!(
                "{} users: {} restored, {} already complete, {} failed; {} folders, {} \
                 messages, {:.1} MB in {:.1} s ({:.1} MB/s)\n",
                report.users,
                report.restored,
                report.unchanged,
                report.failed,
                report.created,
                report.appended,
                report.bytes as f64 / 1e6,
                report.seconds,
                report.bytes as f64 / 1e6 / report.seconds.max(1e-9)
            )
            .as_bytes(),
        )
    };
    output::io_result(printed)?;
    Ok(if report.failed > 0 {
        ExitCode::from(EX_DATAERR as u8)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn run(a: &RestoreArgs) -> Result<ExitCode, Error> {
    if a.exact {
        refuse_tls_for_exact(a)?;
    }
    if a.all {
        return run_all(a);
    }
    let user = a.user.clone().unwrap_or_default();
    let (archive, catalog) = match &a.archive {
        Some(p) => (p.clone(), catalog_path_for(p)),
        None => {
            let ua = Vault::open(&a.vault)?
                .user(&user)?
                .ok_or_else(|| Error::not_found("user in the vault", user.clone()))?;
            (ua.archive, ua.catalog)
        }
    };
    // One rule for every --at (`cyrvault ls` uses the same parser): UTC unless the
    // string says otherwise.
    let time = |s: &Option<String>| -> Result<Option<i64>, Error> {
        s.as_deref()
            .map(cyrvault_host::admin::parse_time)
            .transpose()
    };
    let when = match (a.run, time(&a.at)?) {
        (Some(n), _) => When::Run(n),
        (None, Some(t)) => When::At(t),
        (None, None) => When::Latest,
    };
    let messages = a
        .messages
        .iter()
        .map(|g| Guid::from_hex(g).ok_or_else(|| usage(format!("{g:?} is not a GUID"))))
        .collect::<Result<Vec<_>, _>>()?;
    let sel = Selection {
        folders: a.folders.clone(),
        when,
        messages,
        include_expunged: a.include_expunged,
        expunged_since: time(&a.expunged_since)?,
        expunged_until: time(&a.expunged_until)?,
        seen_db: a.seen,
    };
    let t = std::time::Instant::now();
    let mut src = Source::open(&archive, &catalog)?;
    let plan = plan(&mut src, &sel)?;
    log::debug!(target: "cyrvault_host::restore", "{user}: planned in {:?}", t.elapsed());
    if !sel.messages.is_empty() {
        let found: usize = plan.folders.iter().map(|f| f.records.len()).sum();
        if found == 0 {
            return Err(Error::not_found(
                "message in any selected folder at that run",
                a.messages.join(", "),
            ));
        }
    }
    let mut bar = (std::io::stderr().is_terminal() && !a.json && !a.dry_run).then(|| {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} messages, {per_sec}, eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bar(pb)
    });
    let mut none = NoProgress;
    let progress: &mut dyn Progress = match &mut bar {
        Some(b) => b,
        None => &mut none,
    };
    let export_to: Option<(ExportKind, &PathBuf)> = a
        .to_mbox
        .as_ref()
        .map(|p| (ExportKind::Mbox, p))
        .or(a.to_maildir.as_ref().map(|p| (ExportKind::Maildir, p)))
        .or(a.to_eml.as_ref().map(|p| (ExportKind::Eml, p)));
    let summary = match (export_to, &a.imap) {
        _ if a.exact => {
            if a.dry_run {
                return Err(usage("--dry-run is for IMAP restores".into()));
            }
            let target = ExactTarget {
                addr: a.sync.clone().unwrap_or_default(),
                admin: a.admin.clone(),
                password: password(a)?,
                partition: a.partition.clone(),
            };
            let opts = ExactOptions {
                resume: a.resume,
                connections: a.jobs,
                ..ExactOptions::default()
            };
            restore_exact(&mut src, &plan, &target, &opts, progress)?
        }
        (Some((kind, path)), _) => {
            if a.dry_run {
                return Err(usage("--dry-run is for IMAP restores".into()));
            }
            export(&mut src, &plan, kind, path, progress)?
        }
        (None, Some(addr)) => {
            let target = ImapTarget {
                addr: addr.clone(),
                admin: a.admin.clone(),
                password: password(a)?,
                user: a.to_user.clone().unwrap_or_else(|| user.clone()),
                tls: imap_tls(a)?,
            };
            let sieve = a.sieve.as_ref().map(|s| {
                if s.is_empty() {
                    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
                    format!("{host}:4190")
                } else {
                    s.clone()
                }
            });
            let opts = ImapOptions {
                into: a.into.clone(),
                dry_run: a.dry_run,
                subscriptions: a.subscriptions,
                sieve,
                vault: a.archive.is_none().then(|| a.vault.clone()),
                sessions: a.jobs,
                defer_foreign_seen: false,
            };
            restore_to_imap(&mut src, &plan, &target, &opts, progress)?
        }
        (None, None) => {
            eprintln!(
                "cyrvault restore: give --imap HOST:PORT or one of --to-mbox/--to-maildir/--to-eml"
            );
            return Ok(ExitCode::from(EX_USAGE as u8));
        }
    };
    if let Some(b) = &bar {
        b.0.finish_and_clear();
    }
    let printed = if a.json {
        output::json(&summary)
    } else {
        let mut out = String::new();
        for act in &summary.actions {
            out.push_str(&format!("{act}\n"));
        }
        for f in &summary.failures {
            eprintln!(
                "cyrvault restore: FAILED {}{}{}: {}",
                f.folder,
                f.uid.map(|u| format!(" uid {u}")).unwrap_or_default(),
                f.guid
                    .as_deref()
                    .map(|g| format!(" {g}"))
                    .unwrap_or_default(),
                f.reason
            );
        }
        for w in &summary.warnings {
            eprintln!("cyrvault restore: warning: {}: {}", w.folder, w.reason);
        }
        out.push_str(&format!(
            "run {}: {} created, {} appended, {} skipped, {} failed{}\n",
            summary.run,
            summary.created,
            summary.appended,
            summary.skipped,
            summary.failed,
            if a.dry_run {
                " (dry run: nothing changed)"
            } else {
                ""
            }
        ));
        use std::io::Write;
        std::io::stdout().lock().write_all(out.as_bytes())
    };
    output::io_result(printed)?;
    Ok(if summary.failed > 0 {
        ExitCode::from(EX_DATAERR as u8)
    } else {
        ExitCode::SUCCESS
    })
}
