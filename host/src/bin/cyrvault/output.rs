//! How results reach the terminal: JSON for scripts, aligned tables for people,
//! errors as `cyrvault <command>: <error>: <cause>...` with a sysexits status.

use std::io::{self, Write};
use std::process::ExitCode;

/// Print `value` as pretty JSON on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)
}

/// A table with a header row; columns are padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = io::stdout().lock();
    let line = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut first = true;
        for (i, c) in cells.enumerate() {
            if !first {
                write!(out, "  ")?;
            }
            first = false;
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.chars().count());
            write!(out, "{c}{}", " ".repeat(pad))?;
        }
        writeln!(out)
    };
    line(&mut out, &mut headers.iter().copied())?;
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// Report an error with its cause chain and turn it into the exit status.
pub fn fail(command: &str, e: &cyrvault_host::Error) -> ExitCode {
    if let cyrvault_host::Error::Service(cyrvault::Error::Io { source, .. }) = e
        && source.kind() == io::ErrorKind::BrokenPipe
    {
        return ExitCode::SUCCESS;
    }
    let mut msg = format!("cyrvault {command}: {e}");
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !msg.ends_with(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cause = c.source();
    }
    eprintln!("{msg}");
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
}

/// Output errors (a closed pipe is a quiet success, like `head` closing early).
pub fn io_result(r: io::Result<()>) -> Result<ExitCode, cyrvault_host::Error> {
    match r {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(cyrvault_host::Error::io("writing", "stdout", e)),
    }
}
