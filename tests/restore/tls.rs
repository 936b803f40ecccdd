//! Restore over TLS (issue #13): Cyrus's imapd and timsieved with a test certificate
//! (their own service-specific `tls_server_cert`), `cyrvault restore --tls` (IMAP
//! STARTTLS, ManageSieve STARTTLS) and `--tls-implicit` (an imaps port) with the
//! certificate checked; a certificate from another CA is refused before anything is
//! sent, and plaintext is refused where TLS was asked for.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use cyrvault::tls::client::ClientOptions;
use cyrvault_host::backup::{self, BackupOptions, ConnectOptions, Server};
use cyrvault_host::imap::{Client, Tls, TlsMode};
use cyrvault_host::restore::sieve::SieveClient;
use cyrvault_host::vault::Vault;
use cyrvault_testkit::sandbox::{Sandbox, SandboxOptions, ServiceLine};

use crate::certs::Pki;

#[test]
fn restore_over_starttls_and_implicit_tls_checks_the_certificate() {
    let pki = Pki::new("restore");
    let (cert, key) = (
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
    );
    let mut conf = Vec::new();
    for svc in ["imap", "imaps", "sieve"] {
        conf.push((format!("{svc}_tls_server_cert"), cert.clone()));
        conf.push((format!("{svc}_tls_server_key"), key.clone()));
    }
    let mut imaps = ServiceLine::tcp("imaps", "imapd");
    imaps.cmd.push_str(" -s");
    let sb = Sandbox::start(SandboxOptions {
        name_hint: "rs-tls".into(),
        extra_services: vec![
            ServiceLine::tcp("cyrvaultd", env!("CARGO_BIN_EXE_cyrvaultd")),
            ServiceLine::tcp("sieve", "timsieved"),
            imaps,
        ],
        extra_imapd_conf: conf,
        ..Default::default()
    })
    .unwrap();
    let dir = pki.dir.join("work");
    fs::create_dir_all(&dir).unwrap();
    let vault = dir.join("vault");
    let password_file = dir.join("imap-password");
    fs::write(&password_file, "secret\n").unwrap();
    fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).unwrap();

    sb.create_user("tina", None).unwrap();
    sb.create_folder("tina", "Work", None).unwrap();
    for i in 0..5 {
        let folder = if i % 2 == 0 { None } else { Some("Work") };
        let m = format!("Subject: tls {i}\r\nFrom: t@example.org\r\n\r\nover TLS {i}\r\n");
        sb.append("tina", folder, &["\\Seen"], None, m.as_bytes())
            .unwrap();
    }
    let trust = ClientOptions {
        ca_file: Some(pki.ca.clone()),
        ..Default::default()
    };
    let sieve_addr = sb.service_addrs["sieve"].to_string();
    {
        // a sieve script to restore, uploaded over TLS (the server offers STARTTLS)
        let tls = Tls {
            mode: TlsMode::StartTls,
            trust: trust.clone(),
        };
        let mut s = SieveClient::connect_with(&sieve_addr, Some(&tls)).unwrap();
        assert!(s.is_tls());
        s.authenticate_plain("tina", "cyrus", "x").unwrap();
        s.putscript("filters", b"keep;\r\n").unwrap();
        s.setactive("filters").unwrap();
        s.logout().unwrap();
    }
    let opts = ConnectOptions {
        secret: Some(sb.cyrvaultd_secret().unwrap()),
        ..Default::default()
    };
    let mut s = Server::connect(&sb.service_addrs["cyrvaultd"].to_string(), &opts).unwrap();
    backup::backup_user(
        &mut s,
        &Vault::open(&vault).unwrap(),
        "tina",
        &BackupOptions::default(),
    )
    .unwrap();
    drop(s);
    // The script changes after the backup, so the restore must upload the backed-up
    // text over ManageSieve STARTTLS (a rerun with the same text uploads nothing).
    let sieve_tls = || {
        let tls = Tls {
            mode: TlsMode::StartTls,
            trust: trust.clone(),
        };
        let mut s = SieveClient::connect_with(&sieve_addr, Some(&tls)).unwrap();
        assert!(s.is_tls());
        s.authenticate_plain("tina", "cyrus", "x").unwrap();
        s
    };
    {
        let mut s = sieve_tls();
        s.putscript("filters", b"discard;\r\n").unwrap();
        s.logout().unwrap();
    }

    let restore = |imap: String, into: &str, tls: &[&str]| {
        let out = Command::new(crate::bins::cyrvault())
            .args(["restore", "tina", "--vault"])
            .arg(&vault)
            .args(["--imap", &imap, "--password-file"])
            .arg(&password_file)
            .args(["--into", into, "--sieve", &sieve_addr, "--json"])
            .args(tls)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ca = pki.ca.display().to_string();
    let other = pki.other_ca.display().to_string();
    let imap = sb.imap_addr.to_string();
    let imaps = sb.service_addrs["imaps"].to_string();

    // STARTTLS on the IMAP port, ManageSieve STARTTLS, the CA checked
    let (code, out, err) = restore(imap.clone(), "Restored/starttls", &["--tls-ca-file", &ca]);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["appended"], 5, "{v}");
    assert_eq!(v["sieve_scripts"], 1, "{v}");
    {
        let mut s = sieve_tls();
        assert_eq!(
            s.getscript("filters").unwrap().replace("\r\n", "\n"),
            "keep;\n"
        );
        s.logout().unwrap();
    }

    // implicit TLS (imaps), trusted by the pin alone
    let (code, out, err) = restore(
        imaps.clone(),
        "Restored/implicit",
        &["--tls-implicit", "--tls-pin", &pki.pin],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["appended"], 5, "{v}");

    // a certificate from another CA: refused, nothing restored
    for (addr, extra) in [
        (imap.clone(), None),
        (imaps.clone(), Some("--tls-implicit")),
    ] {
        let mut args = vec!["--tls-ca-file", other.as_str()];
        args.extend(extra);
        let (code, out, err) = restore(addr, "Restored/untrusted", &args);
        assert_eq!(code, 77, "{out}\n{err}");
        assert!(err.contains("certificate"), "{err}");
        eprintln!(
            "restore to an untrusted server: exit {code}: {}",
            err.trim()
        );
    }
    let mut admin = sb.admin_as("tina").unwrap();
    let names: Vec<String> = admin
        .list("", "*")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        names.iter().any(|n| n.contains("Restored.starttls"))
            && names.iter().any(|n| n.contains("Restored.implicit"))
            && !names.iter().any(|n| n.contains("untrusted")),
        "{names:?}"
    );
    admin.logout().unwrap();

    // --exact has no TLS to sync_server: TLS flags are refused before anything is
    // sent, not silently dropped
    let out = Command::new(crate::bins::cyrvault())
        .args([
            "restore",
            "tina",
            "--exact",
            "--sync",
            &imap,
            "--tls-ca-file",
            &ca,
        ])
        .arg("--password-file")
        .arg(&password_file)
        .arg("--vault")
        .arg(&vault)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--exact does not speak TLS"), "{err}");

    // the IMAP client says it runs in TLS; a wrong name is refused
    let tls = Tls {
        mode: TlsMode::StartTls,
        trust: trust.clone(),
    };
    let c = Client::connect_with(&imap, Some(&tls)).unwrap();
    assert!(c.is_tls());
    let wrong_name = Tls {
        mode: TlsMode::StartTls,
        trust: ClientOptions {
            server_name: Some("imap.example.org".into()),
            ..trust
        },
    };
    let e = Client::connect_with(&imap, Some(&wrong_name))
        .err()
        .unwrap();
    assert_eq!(e.kind, cyrvault_host::imap::ImapErrorKind::Tls, "{e}");
    let _ = fs::remove_dir_all(&dir);
}
