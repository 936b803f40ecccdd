//! `cyrvault backup USER... --server HOST:PORT [--secret-file F] [--servername NAME]
//! [--tls] [--tls-ca-file F] [--tls-pin SHA256] [--vault DIR] [--all [--no-shared]]
//! [--base-protocol] [--jobs N] [--json]`: one library call (`backup::backup_users_jobs`:
//! N users at once, results in the order given), a progress bar on a terminal, a
//! summary table or JSON, and an exit status that is non-zero if any user failed (its
//! sysexits code), had a folder it could not back up (75 when all such folders changed
//! while read, else 65) or had spool damage (65), or if `--all` could not list shared
//! mailboxes (78, unless `--no-shared`); with several, the most severe class
//! (`ErrorKind::severity`). Every folder not backed up is named with its reason on
//! stderr, after the table, and in `--json`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use cyrvault::secret::Secret;
use cyrvault::tls::client::{ClientOptions, parse_pin};
use cyrvault_host::backup::{self, BackupOptions, ConnectOptions, Progress, Server, UserReport};
use cyrvault_host::error::{EX_CONFIG, EX_USAGE, ErrorKind};
use cyrvault_host::vault::Vault;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::args::{BackupArgs, TlsArgs};
use crate::output;

/// Progress bar on stderr: current user and folder, bytes fetched, rate.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn user_started(&self, user: &str, folders: usize) {
        self.0.set_message(format!("{user}: {folders} folders"));
    }
    fn folder(&self, user: &str, name: &str) {
        self.0.set_message(format!("{user}: {name}"));
    }
    fn bytes(&self, n: u64) {
        self.0.inc(n);
    }
}

#[derive(Serialize)]
struct JsonUser<'a> {
    user: &'a str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<&'a UserReport>,
}

pub fn run(a: &BackupArgs) -> Result<ExitCode, cyrvault_host::Error> {
    if a.users.is_empty() && !a.all {
        eprintln!("cyrvault backup: name at least one USER, or --all");
        return Ok(ExitCode::from(EX_USAGE as u8));
    }
    if a.jobs == Some(0) {
        eprintln!("cyrvault backup: --jobs must be at least 1");
        return Ok(ExitCode::from(EX_USAGE as u8));
    }
    // checked as the service checks its own: mode 0600, at least 32 bytes
    let secret = match &a.secret_file {
        Some(p) => Some(Secret::load(p, "--secret-file")?),
        None => None,
    };
    let copts = ConnectOptions {
        servername: a.servername.clone(),
        secret,
        base_only: a.base_protocol,
        timeout: None,
        tls: tls_options(&a.tls)?,
    };
    let mut server = Server::connect(&a.server, &copts)?;
    let vault = Vault::open(&a.vault)?;
    let mut users = a.users.clone();
    let mut shared_unlisted = false;
    if a.all {
        // every user, then every top-level shared hierarchy (`%shared`, its own archive)
        let shared = if a.no_shared {
            Vec::new()
        } else if server.has("SHARED") {
            server.shared_owners()?
        } else {
            shared_unlisted = true;
            Vec::new()
        };
        let shared = shared.into_iter().map(|(o, _)| o);
        for u in server.users()?.into_iter().chain(shared) {
            if !users.contains(&u) {
                users.push(u);
            }
        }
    }
    let bar = if std::io::stderr().is_terminal() && !a.json {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg:40} {bytes} fetched, {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        Some(Arc::new(Bar(pb)))
    } else {
        None
    };
    let opts = BackupOptions {
        progress: bar.clone().map(|b| b as Arc<dyn Progress>),
        writer: None,
    };
    let jobs = a.jobs.unwrap_or_else(backup::default_jobs);
    let results = backup::backup_users_jobs(&mut server, &vault, &users, &opts, jobs);
    if let Some(b) = &bar {
        b.0.finish_and_clear();
    }
    let mut code: Option<i32> = None;
    // the most severe class wins (78 over 77 over 65 ... over 75)
    let mut worse = |c: i32| {
        code = Some(match (code, ErrorKind::from_exit_code(c)) {
            (Some(old), Some(k)) => {
                ErrorKind::from_exit_code(old).map_or(old, |o| o.worst(k).exit_code())
            }
            _ => code.unwrap_or(c),
        });
    };
    for (u, r) in &results {
        match r {
            Err(e) => {
                eprintln!("cyrvault backup: {u}: {e}");
                worse(e.exit_code());
            }
            Ok(rep) => {
                for d in &rep.damage {
                    eprintln!("cyrvault backup: {d}");
                }
                for f in &rep.folders_failed {
                    eprintln!("cyrvault backup: {f}");
                }
                if let Some(c) = rep.problem_exit_code() {
                    worse(c);
                }
            }
        }
    }
    let printed = if a.json {
        let rows: Vec<JsonUser<'_>> = results
            .iter()
            .map(|(u, r)| JsonUser {
                user: u,
                ok: r.as_ref().is_ok_and(|rep| !rep.has_problems()),
                error: r.as_ref().err().map(|e| e.to_string()),
                report: r.as_ref().ok(),
            })
            .collect();
        output::json(&rows)
    } else {
        output::table(
            &[
                "user",
                "run",
                "folders",
                "changed",
                "unchanged",
                "gone",
                "messages",
                "MB fetched",
                "MB written",
                "seconds",
                "status",
            ],
            &results.iter().map(|(u, r)| row(u, r)).collect::<Vec<_>>(),
        )
        .and_then(|()| failed_folders(&results))
    };
    output::io_result(printed)?;
    if shared_unlisted {
        eprintln!(
            "cyrvault backup: {}: the server cannot list shared mailboxes (it does not offer \
             SHARED: a stock backupcyrusd, an older cyrvaultd, or --base-protocol): shared \
             (non-user) mailboxes on it, if any, were NOT backed up. Back them up from a \
             cyrvaultd that offers SHARED, or give --no-shared if the server has none or \
             they are backed up otherwise",
            a.server
        );
        worse(EX_CONFIG);
    }
    Ok(match code {
        None => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
    })
}

/// The TLS options the flags ask for; None: plaintext.
pub(crate) fn tls_options(t: &TlsArgs) -> Result<Option<ClientOptions>, cyrvault_host::Error> {
    let pin = match &t.tls_pin {
        None => None,
        Some(p) => Some(
            parse_pin(p).map_err(|m| cyrvault_host::Error::refused(format!("--tls-pin: {m}")))?,
        ),
    };
    if !t.tls && t.tls_ca_file.is_none() && pin.is_none() {
        return Ok(None);
    }
    Ok(Some(ClientOptions {
        ca_file: t.tls_ca_file.clone(),
        pin,
        server_name: t.tls_server_name.clone(),
    }))
}

fn mb(n: u64) -> String {
    format!("{:.1}", n as f64 / 1e6)
}

fn row(user: &str, r: &Result<UserReport, cyrvault_host::backup::BackupError>) -> Vec<String> {
    match r {
        Ok(rep) => vec![
            user.to_string(),
            rep.run.to_string(),
            rep.folders_seen.to_string(),
            rep.folders_changed.to_string(),
            rep.folders_unchanged.to_string(),
            rep.folders_gone.to_string(),
            rep.messages_fetched.to_string(),
            mb(rep.bytes_fetched),
            mb(rep.bytes_written),
            format!("{:.2}", rep.duration_ms as f64 / 1000.0),
            match (rep.folders_failed.len(), rep.damage.len()) {
                (0, 0) if rep.unchanged => "no change, ok".into(),
                (0, 0) => "ok".into(),
                (0, d) => format!("{d} damaged"),
                (f, 0) => format!("FAILED: {f} folder(s)"),
                (f, d) => format!("FAILED: {f} folder(s), {d} damaged"),
            },
        ],
        Err(e) => {
            let mut v = vec![user.to_string()];
            v.extend(std::iter::repeat_n("-".to_string(), 9));
            v.push(format!("FAILED: {e}"));
            v
        }
    }
}

/// After the table: every folder a run did not back up, with its reason.
fn failed_folders(
    results: &[(
        String,
        Result<UserReport, cyrvault_host::backup::BackupError>,
    )],
) -> std::io::Result<()> {
    use std::io::Write;
    let failed: Vec<_> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|rep| &rep.folders_failed)
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nfolders not backed up:")?;
    for f in failed {
        writeln!(out, "  {f}")?;
    }
    Ok(())
}
