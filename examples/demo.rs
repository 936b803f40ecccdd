//! The README's demo: a private Cyrus on loopback, sample mail, `cyrvaultd` started
//! by Cyrus's real master, and the `cyrvault` command run against it step by step.
//! Run it with `bash scripts/demo.sh` (it builds the binaries and sets
//! `CYRVAULT_BIN_DIR`). Every step prints the command it runs and its output.
//! `CYRVAULT_SERVICE_DIR` names another directory for `cyrvaultd` (the packages'
//! test runs `/usr/bin/cyrvault` with `/usr/lib/cyrus/bin/cyrvaultd`).

use std::path::{Path, PathBuf};
use std::process::Command;

use std::os::unix::fs::{PermissionsExt, chown};

use cyrvault_testkit::sandbox::{
    PopulatePlan, Sandbox, SandboxOptions, ServiceLine, make_history, populate,
};

fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CYRVAULT_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/examples/demo -> target/<profile>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

fn step(title: &str) {
    println!("\n==> {title}");
}

/// Run a cyrvault command, echo it and its output; false if it failed.
fn run(bin: &Path, args: &[&str]) -> bool {
    println!("$ cyrvault {}", args.join(" "));
    // The IMAP admin password for restore comes from the environment, as an admin
    // would pass it (never on the command line); the sandbox accepts any password.
    match Command::new(bin)
        .args(args)
        .env("CYRVAULT_IMAP_PASSWORD", "demo")
        .status()
    {
        Ok(s) if s.success() => true,
        Ok(s) => {
            println!("(exit status {})", s.code().unwrap_or(-1));
            false
        }
        Err(e) => {
            println!("(could not run {}: {e})", bin.display());
            false
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bins = bin_dir();
    let cyrvault = bins.join("cyrvault");
    let cyrvaultd = std::env::var_os("CYRVAULT_SERVICE_DIR")
        .map_or_else(|| bins.clone(), PathBuf::from)
        .join("cyrvaultd");

    // The shared secret the backup host proves it knows (it never crosses the wire):
    // mode 0600, owned by the cyrus user, as the service insists.
    let work = std::env::temp_dir().join(format!("cyrvault-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let secret = work.join("cyrvault.secret");
    std::fs::write(&secret, b"demo secret: use 32 random bytes in real life\n")?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    if let Ok(Some(u)) = nix::unistd::User::from_name("cyrus") {
        chown(&secret, Some(u.uid.as_raw()), Some(u.gid.as_raw()))?;
    }
    let secret = secret.display().to_string();
    let vault = work.join("vault").display().to_string();

    step("starting a private Cyrus (real master, imapd, lmtpd, and cyrvaultd) on 127.0.0.1");
    let mut opts = SandboxOptions {
        name_hint: "demo".into(),
        extra_imapd_conf: vec![("cyrvaultd_secret_file".into(), secret.clone())],
        ..SandboxOptions::default()
    };
    opts.extra_services.push(ServiceLine::tcp(
        "cyrvaultd",
        &cyrvaultd.display().to_string(),
    ));
    let sb = Sandbox::start(opts)?;
    let service = sb
        .service_addrs
        .get("cyrvaultd")
        .copied()
        .ok_or("no cyrvaultd address")?
        .to_string();
    println!(
        "binaries {} and {}",
        cyrvault.display(),
        cyrvaultd.display()
    );
    println!(
        "sandbox {} (servername {})",
        sb.root.display(),
        sb.servername
    );
    println!(
        "imap {}  lmtp {}  cyrvaultd {}",
        sb.imap_addr, sb.lmtp_addr, service
    );

    step("loading sample mail over IMAP and LMTP (seeded generator + real awkward messages)");
    let plan = PopulatePlan {
        users: vec!["alice".into(), "bob".into(), "carol".into()],
        folders_per_user: 3,
        messages: 240,
        max_message_size: 2 << 20,
        ..PopulatePlan::default()
    };
    let pop = populate(&sb, &plan)?;
    let stored: usize = pop.stored.values().map(Vec::len).sum();
    println!(
        "{} messages in {} mailboxes of {} users ({} appended, {} delivered by LMTP, {} extra copies)",
        stored,
        pop.stored.len(),
        pop.users.len(),
        pop.appended,
        pop.delivered,
        pop.duplicates
    );

    step("what cyrvault reads from Cyrus's own files");
    let mboxdb = sb.config_dir().join("mailboxes.db").display().to_string();
    let mut ok = run(&cyrvault, &["inspect", "mailboxes", &mboxdb]);

    let backup_args = [
        "backup",
        "--all",
        "--server",
        &service,
        "--secret-file",
        &secret,
        "--vault",
        &vault,
    ];
    step("run 1: full backup of every user (authenticated; Cyrus locks held for milliseconds)");
    ok &= run(&cyrvault, &backup_args);

    step("the users change their mail: flags, expunges, a renamed and a deleted folder");
    let h = make_history(&sb, &pop, 7)?;
    println!(
        "{} flag changes, {} expunged, renamed {:?}, deleted {:?}",
        h.flag_changes,
        h.expunged.len(),
        h.renamed,
        h.deleted
    );

    step(
        "run 2: incremental backup (unchanged folders cost one status line, known messages are not fetched)",
    );
    ok &= run(&cyrvault, &backup_args);

    step("what the vault holds");
    ok &= run(&cyrvault, &["list", "--vault", &vault]);
    ok &= run(&cyrvault, &["show", "alice", "--vault", &vault]);
    ok &= run(&cyrvault, &["ls", "alice", "--vault", &vault]);
    ok &= run(
        &cyrvault,
        &["ls", "alice", "INBOX", "--run", "1", "--vault", &vault],
    );
    ok &= run(&cyrvault, &["stats", "--vault", &vault]);

    step(
        "verify: every member inflates, every message hashes to its GUID, catalog and archive agree",
    );
    ok &= run(&cyrvault, &["verify", "--all", "--vault", &vault]);

    step("the catalog is derived data: rebuild it from the archive alone");
    ok &= run(&cyrvault, &["reindex", "--all", "--vault", &vault]);

    step("restore: alice's deleted folder, as it was in run 1, into a new tree beside her mail");
    let imap = sb.imap_addr.to_string();
    let restore_args = [
        "restore",
        "alice",
        "INBOX.Archive.2023",
        "--run",
        "1",
        "--imap",
        &imap,
        "--into",
        "Restored/run1",
        "--vault",
        &vault,
    ];
    let mut dry = restore_args.to_vec();
    dry.push("--dry-run");
    ok &= run(&cyrvault, &dry);
    ok &= run(&cyrvault, &restore_args);
    step("run it again: nothing is appended twice (messages already there are skipped by GUID)");
    ok &= run(&cyrvault, &restore_args);

    step("restore to files: alice's INBOX as a Maildir, for another system");
    let maildir = work.join("alice-maildir").display().to_string();
    ok &= run(
        &cyrvault,
        &[
            "restore",
            "alice",
            "INBOX",
            "--to-maildir",
            &maildir,
            "--vault",
            &vault,
        ],
    );

    step("stock tools read the archive");
    if let Some(a) = find_archive(Path::new(&vault)) {
        println!("$ tar -tzf {} | head -5", a.display());
        let out = Command::new("tar").arg("-tzf").arg(&a).output()?;
        ok &= out.status.success();
        for l in String::from_utf8_lossy(&out.stdout).lines().take(5) {
            println!("{l}");
        }
    }

    println!("\nThe sandbox is stopped and removed now (set CYRVAULT_KEEP_SANDBOX=1 to keep it).");
    drop(sb);
    let _ = std::fs::remove_dir_all(&work);
    if ok {
        Ok(())
    } else {
        Err("a demo step failed".into())
    }
}

/// The first `.tar.gz` under the vault's shard directories.
fn find_archive(vault: &Path) -> Option<PathBuf> {
    let shards = std::fs::read_dir(vault).ok()?.filter_map(|e| e.ok());
    shards
        .filter(|d| d.path().is_dir())
        .flat_map(|d| {
            std::fs::read_dir(d.path())
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
        })
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
}
