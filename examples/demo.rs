//! The README's demo: a private Cyrus on loopback, sample mail, `cyrvaultd` started
//! by Cyrus's real master, and the `cyrvault` command run against it step by step.
//! Run it with `bash scripts/demo.sh` (it builds the binaries and sets
//! `CYRVAULT_BIN_DIR`). Every step prints the command it runs and its output.

use std::path::{Path, PathBuf};
use std::process::Command;

use cyrvault::sandbox::{PopulatePlan, Sandbox, SandboxOptions, ServiceLine, populate};

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
    match Command::new(bin).args(args).status() {
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
    let cyrvaultd = bins.join("cyrvaultd");

    step("starting a private Cyrus (real master, imapd, lmtpd, and cyrvaultd) on 127.0.0.1");
    let mut opts = SandboxOptions {
        name_hint: "demo".into(),
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
        .ok_or("no cyrvaultd address")?;
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
    let mboxdb = sb.config_dir().join("mailboxes.db");
    let mboxdb = mboxdb.display().to_string();
    let ok = run(&cyrvault, &["inspect", "mailboxes", &mboxdb]);

    println!("\nThe sandbox is stopped and removed now (set CYRVAULT_KEEP_SANDBOX=1 to keep it).");
    drop(sb);
    if ok {
        Ok(())
    } else {
        Err("a demo step failed".into())
    }
}
