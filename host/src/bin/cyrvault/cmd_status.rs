//! `cyrvault status --server HOST:PORT [--secret-file F] [--servername S] [--json]`:
//! ask a running cyrvaultd how it is doing (`backup::Server::status`): sessions,
//! requests, bytes, lock waits and errors since master started, the answering
//! process's own figures, the Cyrus version and conventions it detected.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use cyrvault_host::admin::format_time;
use cyrvault_host::backup::{ConnectOptions, Server, ServiceStatus};

use crate::output;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The service, HOST:PORT (cyrvaultd's listen address).
    #[arg(long)]
    pub server: String,
    /// File holding the shared secret (cyrvaultd_secret_file on the server).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// The server's `servername`; learned from the server if not given.
    #[arg(long)]
    pub servername: Option<String>,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

pub fn run(a: &StatusArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let copts = ConnectOptions {
        servername: a.servername.clone(),
        // checked as the service checks its own: mode 0600, at least 32 bytes
        secret: match &a.secret_file {
            Some(p) => Some(cyrvault::secret::Secret::load(p, "--secret-file")?),
            None => None,
        },
        base_only: false,
        timeout: Some(Duration::from_secs(30)),
        tls: None,
    };
    let mut server = Server::connect(&a.server, &copts)?;
    let st = server.status()?;
    if a.json {
        return output::io_result(output::json(&st));
    }
    print_text(&st);
    Ok(ExitCode::SUCCESS)
}

fn print_text(st: &ServiceStatus) {
    let row = |k: &str, v: String| println!("{k:<18} {v}");
    row(
        "server",
        format!("{} (servername {})", st.server, st.servername),
    );
    if st.service.is_some() {
        let since = st.service("since");
        let up = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(since);
        row(
            "since",
            format!(
                "{} (master started {} h {} min ago; figures cover every process since)",
                format_time(i64::try_from(since).unwrap_or(0)),
                up / 3600,
                up / 60 % 60
            ),
        );
        row(
            "sessions",
            format!(
                "{} ({} active now)",
                st.service("sessions"),
                st.service("sessions_active")
            ),
        );
        row("requests", st.service("requests").to_string());
        row("bytes sent", human_bytes(st.service("bytes")));
        row(
            "lock waits",
            format!(
                "{} (waited {} in all), {} timed out",
                st.service("lock_waits"),
                ms(st.service("lock_wait_us")),
                st.service("lock_timeouts")
            ),
        );
        row("longest lock hold", ms(st.service("lock_hold_max_us")));
        row("errors", st.service("errors").to_string());
        row("refused", st.service("refused").to_string());
    } else {
        row(
            "service-wide",
            "not available (an older cyrvaultd, or not run by master): this process only".into(),
        );
    }
    let p = |k: &str| st.process.get(k).copied().unwrap_or(0);
    row(
        "this process",
        format!(
            "{} sessions, {} locks held, {} sent, lock hold max {} p99 {}",
            p("sessions_total"),
            p("locks_held"),
            human_bytes(p("bytes_served")),
            ms(p("lock_hold_max_us")),
            ms(p("lock_hold_p99_us"))
        ),
    );
    row(
        "cyrus version",
        st.cyrus
            .get("version")
            .cloned()
            .unwrap_or_else(|| "unknown".into()),
    );
    let conventions: Vec<String> = st
        .cyrus
        .iter()
        .filter(|(k, _)| k.as_str() != "version")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    row(
        "cyrus conventions",
        if conventions.is_empty() {
            "not reported".into()
        } else {
            conventions.join(" ")
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(ms(1500), "1.5 ms");
    }
}
