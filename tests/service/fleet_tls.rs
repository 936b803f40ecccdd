//! cyrvault.conf's TLS settings (issue #13, doc/security.md "The backup host") against
//! cyrvaultd under Cyrus's real master, configured with Cyrus's own
//! `tls_server_cert`/`tls_server_key` (not the service's override):
//!
//! * `tls: yes` + `tls_ca_file`: `discover` and `run` back the user up (the service
//!   accepts AUTH only inside TLS, so a plaintext session could not have).
//! * The same server without `tls: yes`: refused (AUTH outside TLS), exit 77.
//! * A wrong `<server>_tls_pin`, or CAs that did not issue the certificate: discover
//!   and run exit 77 (the fleet's failure classes), the server's users fail, named,
//!   with the certificate named as the reason; nothing is sent in plaintext instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::*;
use crate::certs::Pki;

/// `cyrvault <args> --config <conf>`.
fn cyrvault(args: &[&str], conf: &Path) -> Output {
    Command::new(crate::bins::cyrvault())
        .args(args)
        .arg("--config")
        .arg(conf)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A cyrvault.conf for the one server `s1`, with `tls_lines` added.
fn conf(dir: &Path, name: &str, sb: &Sandbox, tls_lines: &str) -> PathBuf {
    let c = format!(
        "servers: s1\ns1_address: {}\ns1_secret_file: {}\n{tls_lines}vault: {}\nworkers: 1\n\
         retry_backoff: 0\n",
        addr(sb, "cyrvaultd"),
        sb.cyrvaultd_secret_file.display(),
        dir.join("vault").display(),
    );
    let p = dir.join(name);
    std::fs::write(&p, c).unwrap();
    p
}

#[test]
fn fleet_conf_tls_checks_the_certificate() {
    let pki = Pki::new("fleet");
    let (cert, key) = (
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
    );
    let sb = start(
        "fleet-tls",
        &[("tls_server_cert", &cert), ("tls_server_key", &key)],
        vec![],
    );
    sb.create_user("alice", None).unwrap();
    sb.append(
        "alice",
        None,
        &[],
        None,
        b"Subject: over TLS\r\nFrom: a@example.org\r\n\r\nbody\r\n",
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("cyrvault-fleet-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, other) = (pki.ca.display(), pki.other_ca.display());

    // TLS for every server, the certificate checked against the CA that issued it
    let good = conf(
        &dir,
        "good.conf",
        &sb,
        &format!("tls: yes\ntls_ca_file: {ca}\n"),
    );
    let o = cyrvault(&["discover", "--json"], &good);
    assert!(o.status.success(), "{}", text(&o));

    // without TLS: the service refuses AUTH outside TLS, and says to use TLS
    let plain = conf(&dir, "plain.conf", &sb, "");
    let o = cyrvault(&["discover"], &plain);
    assert_eq!(o.status.code(), Some(77), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--tls"),
        "{}",
        text(&o)
    );

    // a wrong pin for s1, and CAs that did not issue the certificate: refused by
    // discover, and a run fails the server's user, the certificate as the reason
    let wrong_pin = conf(
        &dir,
        "pin.conf",
        &sb,
        &format!("s1_tls_pin: {}\n", "ab".repeat(32)),
    );
    let wrong_ca = conf(
        &dir,
        "ca.conf",
        &sb,
        &format!("tls: yes\ntls_ca_file: {other}\n"),
    );
    for c in [&wrong_pin, &wrong_ca] {
        let d = cyrvault(&["discover"], c);
        assert_eq!(d.status.code(), Some(77), "{}", text(&d));
        assert!(
            String::from_utf8_lossy(&d.stderr).contains("certificate"),
            "{}",
            text(&d)
        );
        let o = cyrvault(&["run"], c);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(77), "{}", text(&o));
        assert!(out.contains("FAILED s1/alice"), "{}", text(&o));
        assert!(out.contains("certificate"), "{}", text(&o));
        if c == &wrong_pin {
            // the message names the certificate the server has, as a pin
            assert!(out.contains("not the pinned one"), "{}", text(&o));
            assert!(
                out.contains(&pki.pin.to_uppercase().replace(':', "")),
                "{}",
                text(&o)
            );
        }
        eprintln!(
            "{}: discover exit {:?}, run exit {:?}: {}",
            c.file_name().unwrap().to_string_lossy(),
            d.status.code(),
            o.status.code(),
            out.lines()
                .find(|l| l.contains("FAILED"))
                .unwrap_or_default()
        );
    }

    // the right configuration backs the user up (retried at once: retry_backoff 0)
    let o = cyrvault(&["run"], &good);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 ok, 0 failed"),
        "{}",
        text(&o)
    );
    // and the right pin alone is enough
    let right_pin = conf(
        &dir,
        "rpin.conf",
        &sb,
        &format!("s1_tls_pin: {}\n", pki.pin),
    );
    let o = cyrvault(&["discover"], &right_pin);
    assert!(o.status.success(), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
