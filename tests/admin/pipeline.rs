//! The real backup pipeline (`cyrvault backup` from `cyrvaultd` under master), then the
//! admin commands against `mbexamine`, and reindex equality.

use super::*;

/// `mbexamine`'s live records of a mailbox: (uid, guid, IMAP flags, internaldate, size).
fn mbexamine(sb: &Sandbox, mailbox: &str) -> Vec<(u64, String, Vec<String>, i64, u64)> {
    let text = sb.mbexamine(mailbox).unwrap();
    let (_, recs) = crate::mbexamine::record_states(&text);
    recs.into_iter()
        .map(|r| {
            let sys = r.system_flags;
            let mut flags: Vec<String> = [
                (1, "\\Answered"),
                (2, "\\Flagged"),
                (4, "\\Deleted"),
                (8, "\\Draft"),
                (16, "\\Seen"),
            ]
            .iter()
            .filter(|(b, _)| sys & b != 0)
            .map(|(_, n)| n.to_string())
            .collect();
            flags.extend(r.keywords);
            (
                u64::from(r.uid),
                r.guid.to_hex(),
                flags,
                r.internaldate,
                r.size,
            )
        })
        .collect()
}

/// The real pipeline: `cyrvault backup` from `cyrvaultd` under Cyrus's master, then the
/// admin commands. `ls` of every folder is what `mbexamine` shows, `cat` of every
/// message hashes to its GUID, and after deleting the catalogs `reindex --all` gives
/// the same answers to list/show/ls/cat/stats and the same canonical dump.
#[test]
fn real_backups_ls_like_mbexamine_and_reindex_identically() {
    let dir = scratch("pipeline");
    let vault = dir.join("vault");
    let sb = Sandbox::start(SandboxOptions {
        name_hint: "admin-pipeline".into(),
        extra_services: vec![cyrvault_testkit::sandbox::ServiceLine::tcp(
            "cyrvaultd",
            env!("CARGO_BIN_EXE_cyrvaultd"),
        )],
        ..Default::default()
    })
    .unwrap();
    let addr = sb.service_addrs["cyrvaultd"].to_string();
    for (u, part) in [("alice", None), ("bob", Some("p2"))] {
        sb.create_user(u, part).unwrap();
        sb.create_folder(u, "Work", None).unwrap();
        sb.create_folder(u, "Lists/cyrus", None).unwrap();
        for n in 0..8u32 {
            let folder = [None, Some("Work"), Some("Lists/cyrus")][(n % 3) as usize];
            let flags: &[&str] = if n % 2 == 0 {
                &["\\Seen", "$Label1"]
            } else {
                &[]
            };
            sb.append(
                u,
                folder,
                flags,
                Some(1_700_000_000 + i64::from(n)),
                &message(n, 2500 + 300 * n as usize),
            )
            .unwrap();
        }
    }
    let backup = || {
        let o = Command::new(crate::bins::cyrvault())
            .args(["backup", "alice", "bob", "--server", &addr, "--vault"])
            .arg(&vault)
            .arg("--secret-file")
            .arg(&sb.cyrvaultd_secret_file)
            .arg("--json")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "backup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    backup();
    let mut c = sb.login("alice").unwrap();
    c.select("INBOX").unwrap();
    c.uid_store("1", "+FLAGS", &["\\Flagged"]).unwrap();
    c.uid_store("2", "+FLAGS", &["\\Deleted"]).unwrap();
    c.expunge().unwrap();
    // A subscription: user-level state the archive keeps (user/<run>/subscriptions).
    c.subscribe(&sb.user_mailbox_name(Some("Lists/cyrus")))
        .unwrap();
    c.rename(
        &sb.user_mailbox_name(Some("Work")),
        &sb.user_mailbox_name(Some("Projects")),
    )
    .unwrap();
    c.logout().unwrap();
    backup();

    let v = vault.to_str().unwrap();
    let list = json(&["list", "--vault", v]);
    let users: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "bob"]);
    let mut checked = 0;
    for user in ["alice", "bob"] {
        let show = json(&["show", "--vault", v, user]);
        for f in show["folders"].as_array().unwrap() {
            let internal = f["names"].as_array().unwrap().last().unwrap()["internal_name"]
                .as_str()
                .unwrap()
                .to_string();
            let name = f["name"].as_str().unwrap();
            let ls = json(&["ls", "--vault", v, user, name]);
            let ours: Vec<(u64, String, Vec<String>, i64, u64)> = ls["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| !m["expunged"].as_bool().unwrap())
                .map(|m| {
                    (
                        m["uid"].as_u64().unwrap(),
                        m["guid"].as_str().unwrap().to_string(),
                        m["flags"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_str().unwrap().to_string())
                            .collect(),
                        m["internaldate"].as_i64().unwrap(),
                        m["size"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                ours,
                mbexamine(&sb, &internal),
                "{user} {name} ({internal})"
            );
            checked += ours.len();
        }
    }
    assert_eq!(checked, 16 - 1, "every message but the expunged one");
    // History through the real pipeline: the rename is one folder with two names, and
    // the expunged message is still there as of run 1.
    let show = json(&["show", "--vault", v, "alice"]);
    let projects = show["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == sb.user_mailbox_name(Some("Projects")).as_str())
        .unwrap_or_else(|| panic!("{show}"));
    assert_eq!(
        projects["names"][0]["name"],
        sb.user_mailbox_name(Some("Work")).as_str()
    );
    // The user's short name for a folder under INBOX finds it too.
    assert_eq!(
        json(&["ls", "--vault", v, "alice", "Projects"])["folder"]["name"],
        sb.user_mailbox_name(Some("Projects")).as_str()
    );
    let o = cyrvault(&["cat", "--vault", v, "alice", "INBOX", "2", "--run", "1"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, message(3, 2500 + 900));
    assert_eq!(json(&["verify", "--vault", v, "--all"])["ok"], true);
    // Stock tar extracts the real archives; every message file hashes to its name.
    for (i, a) in admin::vault_archives(&vault).unwrap().iter().enumerate() {
        let n = super::reads::extract_and_check(&a.archive, &dir.join(format!("x{i}")));
        let stats = a.open_catalog().unwrap().stats().unwrap();
        assert_eq!(n, stats.messages, "{}", a.user);
    }

    let before: Vec<BTreeMap<String, String>> = ["alice", "bob"]
        .iter()
        .map(|u| answers_for(v, u, 2))
        .collect();
    let archives = admin::vault_archives(&vault).unwrap();
    let dumps: Vec<String> = archives
        .iter()
        .map(|a| a.open_catalog().unwrap().dump_canonical().unwrap())
        .collect();
    for a in &archives {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = a.catalog.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
    let user_files = dumps[0].split("[user_files]").nth(1).map_or(0, |t| {
        t.lines()
            .skip(1)
            .take_while(|l| !l.starts_with('['))
            .count()
    });
    assert!(
        user_files > 0,
        "the user-level files are part of the comparison"
    );
    let r = json(&["reindex", "--vault", v, "--all"]);
    assert_eq!(r["ok"], true, "{r}");
    for (a, d) in archives.iter().zip(&dumps) {
        assert_eq!(
            &a.open_catalog().unwrap().dump_canonical().unwrap(),
            d,
            "{}",
            a.user
        );
    }
    for (u, b) in ["alice", "bob"].iter().zip(&before) {
        let after = answers_for(v, u, 2);
        assert_eq!(b.len(), after.len());
        for (k, x) in b {
            assert_eq!(Some(x), after.get(k), "{u}: {k}");
        }
    }
    drop(sb);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The damage must-show on an archive written by the real pipeline (small members, via
/// `BackupOptions::writer`): a byte flipped in a middle member; `verify` names that
/// member and exactly the messages in it with their folders/UIDs, exits 65, and every
/// message outside it still reads back with `cat`.
#[test]
fn real_backup_with_a_flipped_byte() {
    use cyrvault_host::backup::{self, BackupOptions, ConnectOptions, Server};
    use cyrvault_host::vault::Vault;

    let dir = scratch("pipedamage");
    let vault = dir.join("vault");
    let sb = Sandbox::start(SandboxOptions {
        name_hint: "admin-pipedamage".into(),
        extra_services: vec![cyrvault_testkit::sandbox::ServiceLine::tcp(
            "cyrvaultd",
            env!("CARGO_BIN_EXE_cyrvaultd"),
        )],
        ..Default::default()
    })
    .unwrap();
    let addr = sb.service_addrs["cyrvaultd"].to_string();
    sb.create_user("carol", None).unwrap();
    sb.create_folder("carol", "Work", None).unwrap();
    let mut c = sb.login("carol").unwrap();
    for n in 0..40u32 {
        let folder = sb.user_mailbox_name((n % 2 == 1).then_some("Work"));
        c.append(&folder, &[], Some(1_700_000_000), &message(100 + n, 9000))
            .unwrap();
    }
    c.logout().unwrap();
    let v = Vault::open(&vault).unwrap();
    let copts = ConnectOptions {
        secret: Some(sb.cyrvaultd_secret().unwrap()),
        ..Default::default()
    };
    let mut s = Server::connect(&addr, &copts).unwrap();
    let opts = BackupOptions {
        writer: Some(WriterOptions {
            member_target: 32 << 10,
            ..Default::default()
        }),
        ..Default::default()
    };
    backup::backup_user(&mut s, &v, "carol", &opts).unwrap();
    drop(s);
    let ua = admin::find_user(&vault, "carol").unwrap();
    let scan = archive::scan(&ua.archive).unwrap();
    let only_messages = message_members(&scan);
    assert!(only_messages.len() >= 5, "{} members", only_messages.len());
    let victim = only_messages[only_messages.len() / 2];
    let mut lost: Vec<String> = victim
        .entries
        .iter()
        .filter_map(|e| match archive::parse_entry_name(&e.name) {
            EntryName::Message(g) => Some(g.to_hex()),
            _ => None,
        })
        .collect();
    lost.sort();
    let others: Vec<String> = scan
        .members
        .iter()
        .flat_map(|m| &m.entries)
        .filter_map(|e| match archive::parse_entry_name(&e.name) {
            EntryName::Message(g) if !lost.contains(&g.to_hex()) => Some(g.to_hex()),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len() + others.len(), 40);
    let mut bytes = read(&ua.archive);
    bytes[(victim.offset + victim.compressed_len / 2) as usize] ^= 0x01;
    std::fs::write(&ua.archive, &bytes).unwrap();

    let vs = vault.to_str().unwrap();
    let o = cyrvault(&["verify", "--vault", vs, "--all", "--json"]);
    assert_eq!(o.status.code(), Some(65));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let u = &j["users"][0];
    assert_eq!(u["user"], "carol");
    let d = u["damaged"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{u}");
    assert_eq!(d[0]["offset"], victim.offset);
    let mut named: Vec<String> = d[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let uses = m["uses"].as_array().unwrap();
            assert_eq!(uses.len(), 1, "{m}");
            assert!(uses[0]["folder"].as_str().unwrap().starts_with("INBOX"));
            assert_eq!(uses[0]["runs"], serde_json::json!([1]));
            m["guid"].as_str().unwrap().to_string()
        })
        .collect();
    named.sort();
    assert_eq!(named, lost);
    assert_eq!(d[0]["runs"], serde_json::json!([1]));
    assert_eq!(u["mismatches"], serde_json::json!([]));
    for g in &others {
        let o = cyrvault(&["cat", "--vault", vs, "carol", g]);
        assert!(o.status.success(), "cat {g}");
        assert_eq!(Guid::of(&o.stdout).to_hex(), *g);
    }
    drop(sb);
    std::fs::remove_dir_all(&dir).unwrap();
}
