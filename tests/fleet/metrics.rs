//! Prometheus metrics of a real fleet (issue 15 item 3): `cyrvault metrics` before the
//! first run, `curl` of `cyrvault run --metrics-listen` while the run backs up 200
//! users of two real Cyrus servers, and the textfile the run writes when it ends;
//! every text passes `promtool check metrics` (Debian's prometheus package) and its
//! figures match the user directory.

use std::collections::HashMap;
use std::io::Read;
use std::sync::mpsc;

use super::*;

/// `promtool check metrics` on `text`: its findings (empty: clean).
fn promtool(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said
    } else {
        format!("exit {:?}: {said}", out.status.code())
    }
}

/// The value of the sample `name` (with its labels as written) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// `curl -sf URL` (the tool an admin would point at the endpoint).
fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10", url])
        .output()
        .expect("curl (scripts/setup.sh installs it)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn metrics_listen_during_a_real_fleet_run() {
    let f = shared_fleet();
    let dir = scratch("metrics");
    // two of the three servers, two drive units each: 200 users
    let textfile_dir = dir.join("node-exporter");
    std::fs::create_dir_all(&textfile_dir).unwrap();
    let textfile = textfile_dir.join("cyrvault.prom");
    let mut c = String::from("servers: s1 s2\n");
    for (i, sb) in f.sbs.iter().take(2).enumerate() {
        let s = format!("s{}", i + 1);
        c += &format!("{s}_address: {}\n", sb.service_addrs["cyrvaultd"]);
        c += &format!("{s}_unit_p1: disk1\n{s}_unit_p2: disk2\n");
    }
    c += &format!("s1_secret_file: {}\n", f.secret.display());
    // the service refuses everything without a secret (doc/security.md)
    c += &format!(
        "s2_secret_file: {}\n",
        f.sbs[1].cyrvaultd_secret_file.display()
    );
    c += &format!(
        "vault: {}\nworkers: 2\nbatch: 10\nlease: 30\nretry_backoff: 0\n\
         stale_after: 3600\nmetrics_file: {}\n",
        dir.join("vault").display(),
        textfile.display()
    );
    let conf = dir.join("cyrvault.conf");
    std::fs::write(&conf, c).unwrap();
    ok(cli(&["discover"], &conf).output().unwrap());

    // Before any run: every user is stale and never backed up, and there is no round.
    let before = ok(cli(&["metrics"], &conf).output().unwrap());
    assert_eq!(promtool(&before), "", "{before}");
    assert_eq!(sample(&before, "cyrvault_fleet_users"), 200.0);
    assert_eq!(
        sample(&before, "cyrvault_fleet_users_never_backed_up"),
        200.0
    );
    assert_eq!(sample(&before, "cyrvault_fleet_stale_users"), 200.0);
    assert!(!before.contains("cyrvault_round_number"));

    // The run, scraped with curl while it lasts.
    let mut run = cli(&["run", "--metrics-listen", "127.0.0.1:0"], &conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let mut stderr = run.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while let Ok(1) = stderr.read(&mut b) {
            if b[0] != b'\n' {
                line.push(b[0]);
                continue;
            }
            let l = String::from_utf8_lossy(&line).into_owned();
            if let Some(url) = l.strip_prefix("cyrvault run: metrics at ") {
                let _ = tx.send(url.to_string());
            }
            all.push_str(&l);
            all.push('\n');
            line.clear();
        }
        all
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the run names its metrics address");
    let mut during: Vec<String> = Vec::new();
    let status = loop {
        if let Some(st) = run.try_wait().unwrap() {
            break st;
        }
        if let Some(body) = curl(&url) {
            // only scrapes taken while the run said it was running
            if body.contains("\ncyrvault_run_in_progress 1\n") {
                during.push(body);
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    };
    let log = reader.join().unwrap();
    eprintln!("{} scrapes while the run lasted", during.len());
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!during.is_empty(), "no scrape while the run lasted\n{log}");
    // one scrape in the middle of the work: some users done, the round open
    let mid = during
        .iter()
        .find(|b| {
            let done = sample(b, "cyrvault_run_users_backed_up_total");
            done > 0.0 && done < 200.0
        })
        .unwrap_or_else(|| panic!("no scrape with work half done ({} scrapes)", during.len()));
    assert_eq!(promtool(mid), "", "{mid}");
    assert_eq!(sample(mid, "cyrvault_round_open"), 1.0);
    assert_eq!(sample(mid, "cyrvault_directory_up"), 1.0);
    assert_eq!(sample(mid, "cyrvault_run_users_to_try"), 200.0);
    assert!(sample(mid, "cyrvault_run_fetched_bytes_total") > 0.0);
    // the directory's figures move during the run too (re-read at most every second)
    assert!(
        during
            .iter()
            .any(|b| sample(b, "cyrvault_fleet_round_users_tried") > 0.0),
        "the round's figures never moved in {} scrapes",
        during.len()
    );
    assert!(curl(&url).is_none(), "the endpoint ends with the run");

    // The textfile written at the end, atomically (nothing else in its directory).
    let names: Vec<_> = std::fs::read_dir(&textfile_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["cyrvault.prom"]);
    let after = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(promtool(&after), "", "{after}");
    assert_eq!(sample(&after, "cyrvault_run_exit_status"), 0.0);
    assert_eq!(sample(&after, "cyrvault_run_in_progress"), 0.0);
    assert_eq!(sample(&after, "cyrvault_run_users_backed_up_total"), 200.0);
    assert_eq!(sample(&after, "cyrvault_round_open"), 0.0);
    assert_eq!(
        sample(&after, "cyrvault_fleet_round_users_backed_up"),
        200.0
    );
    assert_eq!(sample(&after, "cyrvault_fleet_round_users_failed"), 0.0);
    assert_eq!(sample(&after, "cyrvault_fleet_users_never_backed_up"), 0.0);
    assert_eq!(sample(&after, "cyrvault_fleet_stale_users"), 0.0);
    for s in ["s1", "s2"] {
        let l = format!("{{server=\"{s}\"}}");
        assert_eq!(
            sample(&after, &format!("cyrvault_server_round_users_backed_up{l}")),
            100.0
        );
        for u in ["disk1", "disk2"] {
            let l = format!("{{server=\"{s}\",unit=\"{u}\"}}");
            assert_eq!(
                sample(&after, &format!("cyrvault_unit_round_users_backed_up{l}")),
                50.0
            );
            assert!(
                sample(
                    &after,
                    &format!("cyrvault_unit_oldest_good_backup_age_seconds{l}")
                ) < 600.0
            );
        }
    }

    // The figures are the directory's: bytes per server as fleet-status sums them,
    // and what the workers said they fetched and stored.
    let st: serde_json::Value = serde_json::from_str(&ok(cli(&["fleet-status", "--json"], &conf)
        .output()
        .unwrap()))
    .unwrap();
    let mut per_server: HashMap<String, (f64, f64)> = HashMap::new();
    for u in st["units"].as_array().unwrap() {
        let e = per_server
            .entry(u["server"].as_str().unwrap().to_string())
            .or_default();
        e.0 += u["bytes"].as_f64().unwrap();
        e.1 += u["stored"].as_f64().unwrap();
    }
    for (s, (fetched, stored)) in &per_server {
        let l = format!("{{server=\"{s}\"}}");
        assert_eq!(
            sample(&after, &format!("cyrvault_server_round_fetched_bytes{l}")),
            *fetched
        );
        assert_eq!(
            sample(&after, &format!("cyrvault_server_round_stored_bytes{l}")),
            *stored
        );
        assert!(*fetched > 0.0 && *stored > 0.0, "{s}: {fetched} {stored}");
    }
    assert_eq!(
        sample(&after, "cyrvault_fleet_round_fetched_bytes"),
        sample(&after, "cyrvault_run_fetched_bytes_total")
    );
    assert_eq!(
        sample(&after, "cyrvault_fleet_round_stored_bytes"),
        sample(&after, "cyrvault_run_stored_bytes_total")
    );

    // The example alert rules (packaging/prometheus, doc/operations.md) only name
    // metrics a real run writes: a renamed metric would silence an alert.
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus/cyrvault-alerts.yml"),
    )
    .unwrap();
    let named: BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("cyrvault_"))
        .collect();
    assert!(named.len() >= 4, "{named:?}");
    for name in named {
        assert!(
            after.lines().any(|l| l
                .strip_prefix(name)
                .is_some_and(|r| r.starts_with(['{', ' ']))),
            "the alert rules name {name}, which the run did not write:\n{after}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
