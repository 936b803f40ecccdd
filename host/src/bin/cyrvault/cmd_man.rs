//! Manual pages and shell completions, generated from the clap definition in
//! `args.rs` (so they cannot drift from what the command accepts):
//!
//! * `cyrvault man DIR` (hidden; the packages run it): cyrvault(1) and one page per
//!   subcommand, `cyrvault-<sub>(1)` (nested ones as `cyrvault-inspect-index(1)`),
//!   each with the exit statuses and a SEE ALSO section;
//! * `cyrvault completions bash|zsh|fish|elvish|powershell`: the completion script on
//!   stdout.
//!
//! cyrvaultd(8) and cyrvault.conf(5) are written by hand in `man/` (see there).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;
use cyrvault_host::error::IoContext;

use crate::args::Cli;
use crate::output;

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The exit statuses every subcommand uses (sysexits, as Cyrus does).
const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
.B 0
Everything asked for was done.
.TP
.B 1
.B list \-\-stale
listed at least one user.
.TP
.B 64
A bad argument (EX_USAGE).
.TP
.B 65
Damage: an archive that needs
.B cyrvault verify
and
.BR "cyrvault reindex" ,
a message whose bytes do not hash to its GUID, a restore that could not bring
everything back (EX_DATAERR).
.TP
.B 66
An unknown user, run, folder or message (EX_NOINPUT).
.TP
.B 70
An internal error, or fleet users left untried because the workers could not
work (EX_SOFTWARE).
.TP
.B 74
A local I/O error (EX_IOERR).
.TP
.B 75
Try again later: a server down, an archive locked by another backup, users that
failed in a fleet run for such reasons and will be retried (EX_TEMPFAIL).
.TP
.B 77
The server refused us: a wrong shared secret, or this host is not in
cyrvaultd_allow (EX_NOPERM).
.TP
.B 78
A configuration error, e.g. a servername that is not the server's (EX_CONFIG).
.PP
A fleet run or discover that met several kinds of failure exits with the most
severe: 78 over 77 over 65 over 74, 70, 66, 64 over 75. A fleet run counts a
retention prune that failed after a good backup the same way, with the prune's
class (65 for a damaged archive).
.PP
What the administrator does about each: /usr/share/doc/cyrvault/operations.md.gz
("When a run fails").
"#;

/// One page: its name, what is typed to run it, its parent's page name, the command.
struct Page {
    name: String,
    bin: String,
    parent: Option<String>,
    cmd: clap::Command,
}

/// Every visible (sub)command with its page name: `cyrvault`, `cyrvault-restore`,
/// `cyrvault-inspect-index`, ...
fn pages(cmd: &clap::Command, name: &str, bin: &str, parent: Option<&str>, out: &mut Vec<Page>) {
    out.push(Page {
        name: name.to_string(),
        bin: bin.to_string(),
        parent: parent.map(str::to_string),
        cmd: cmd.clone(),
    });
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let n = sub.get_name();
        pages(
            sub,
            &format!("{name}-{n}"),
            &format!("{bin} {n}"),
            Some(name),
            out,
        );
    }
}

/// SEE ALSO: the parent page, the child pages, the configuration and the service.
fn see_also(page: &Page, all: &[Page]) -> String {
    let mut refs: Vec<(String, u8)> = Vec::new();
    if let Some(p) = &page.parent {
        refs.push((p.clone(), 1));
    }
    for child in all
        .iter()
        .filter(|c| c.parent.as_deref() == Some(page.name.as_str()))
    {
        refs.push((child.name.clone(), 1));
    }
    refs.push(("cyrvault.conf".into(), 5));
    refs.push(("cyrvaultd".into(), 8));
    let body: Vec<String> = refs
        .iter()
        .map(|(name, sect)| format!(".BR {name} ({sect})"))
        .collect();
    format!(
        ".SH \"SEE ALSO\"\n{}\n.PP\nThe guides in /usr/share/doc/cyrvault/.\n",
        body.join(",\n")
    )
}

/// Write every page into `dir`; the file names written.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>, cyrvault_host::Error> {
    std::fs::create_dir_all(dir).at("creating", dir)?;
    let mut root = Cli::command();
    root.build();
    let mut all = Vec::new();
    pages(&root, "cyrvault", "cyrvault", None, &mut all);
    let version = root.get_version().unwrap_or("").to_string();
    let mut written = Vec::new();
    for page in &all {
        // clap takes names as &'static str (its `string` feature is off): the
        // generator runs once and exits, so the few page names are leaked
        let name: &'static str = page.name.clone().leak();
        let ver: &'static str = version.clone().leak();
        let cmd = page
            .cmd
            .clone()
            .name(name)
            .bin_name(page.bin.clone())
            .version(ver);
        let mut man = clap_mangen::Man::new(cmd)
            .manual("cyrvault manual")
            .source(format!("cyrvault {version}"));
        if let Some(date) = source_date() {
            man = man.date(date);
        }
        let mut text = Vec::new();
        let render = |out: &mut Vec<u8>| -> std::io::Result<()> {
            man.render_title(out)?;
            man.render_name_section(out)?;
            man.render_synopsis_section(out)?;
            man.render_description_section(out)?;
            man.render_options_section(out)?;
            man.render_subcommands_section(out)?;
            man.render_extra_section(out)?;
            out.write_all(EXIT_STATUS.as_bytes())?;
            out.write_all(see_also(page, &all).as_bytes())?;
            man.render_version_section(out)
        };
        let path = dir.join(format!("{}.1", page.name));
        render(&mut text).at("rendering", &path)?;
        std::fs::write(&path, text).at("writing", &path)?;
        written.push(path);
    }
    Ok(written)
}

/// `SOURCE_DATE_EPOCH` as `YYYY-MM-DD` (reproducible pages), if set.
fn source_date() -> Option<String> {
    let secs: i64 = std::env::var("SOURCE_DATE_EPOCH")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(cyrvault_host::admin::format_time(secs)[..10].to_string())
}

pub fn man(a: &ManArgs) -> Result<ExitCode, cyrvault_host::Error> {
    for p in write_pages(&a.dir)? {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn completions(a: &CompletionsArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "cyrvault", &mut out);
    output::io_result(std::io::stdout().lock().write_all(&out))
}
