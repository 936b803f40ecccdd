//! The loader of `bench/big_folder.sh` (not a test): a private real Cyrus (the
//! sandbox) with `cyrvaultd` under its master and one user `big` whose INBOX holds N
//! generated messages of about SIZE bytes, loaded by MULTIAPPEND
//! (`sandbox::fill_folder`). Prints `READY <cyrvaultd address> <secret file>
//! <seconds to load>` and keeps Cyrus running until a line (or EOF) on stdin.
//!
//! Usage: `big_folder WORKDIR CYRVAULTD N [SIZE]`.
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use cyrvault_host::imap::Arg;
use cyrvault_testkit::sandbox::{Sandbox, SandboxOptions, ServiceLine, fill_folder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, work, daemon, n, rest @ ..] = args.as_slice() else {
        return Err("usage: big_folder WORKDIR CYRVAULTD N [SIZE]".into());
    };
    let work = std::path::PathBuf::from(work);
    let n: usize = n.parse()?;
    let size: usize = rest.first().map_or(Ok(800), |s| s.parse())?;
    std::fs::create_dir_all(&work)?;
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755))?;
    let secret = work.join("secret");
    std::fs::write(&secret, "big-folder-bench-secret-0123456789\n")?;
    let cyrus = nix::unistd::User::from_name("cyrus")?.ok_or("no user cyrus")?;
    nix::unistd::chown(&secret, Some(cyrus.uid), Some(cyrus.gid))?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    let sb = Sandbox::start(SandboxOptions {
        name_hint: "bigfolder".into(),
        extra_services: vec![ServiceLine::tcp("cyrvaultd", daemon)],
        extra_imapd_conf: vec![("cyrvaultd_secret_file".into(), secret.display().to_string())],
        ..Default::default()
    })?;
    let t = Instant::now();
    sb.create_user("big", None)?;
    fill_folder(&sb, "big", "INBOX", n, size, 4242)?;
    println!(
        "READY {} {} {:.1}",
        sb.service_addrs["cyrvaultd"],
        secret.display(),
        t.elapsed().as_secs_f64()
    );
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["fill", n, size, seed] => {
                fill_folder(
                    &sb,
                    "big",
                    "INBOX",
                    n.parse()?,
                    size.parse()?,
                    seed.parse()?,
                )?;
            }
            ["purge"] => {
                let mut c = sb.login("big")?;
                c.run(&[Arg::Atom("SELECT"), Arg::Str(b"INBOX")])?;
                c.run(&[
                    Arg::Atom("STORE"),
                    Arg::Atom("1:*"),
                    Arg::Atom("+FLAGS.SILENT (\\Deleted)"),
                ])?;
                c.run(&[Arg::Atom("EXPUNGE")])?;
                c.logout()?;
                sb.tool_ok("cyr_expire", &["-X", "0"])?;
            }
            _ => break,
        }
        println!("OK");
    }
    Ok(())
}
