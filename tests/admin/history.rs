//! History and reindex on hand-driven backups of a real spool: `ls --run`, `cat --run`,
//! renames and deletions in `show`, reindex equality; `list --stale` and `stats`.

use super::*;

#[test]
fn reindex_from_the_archive_alone_gives_identical_answers() {
    let fx = history_fixture("reindex", 16 << 20);
    let v = fx.vault.to_str().unwrap();

    // History as the catalog tells it.
    let ls1 = json(&["ls", "--vault", v, USER, "INBOX", "--run", "1"]);
    let ls2 = json(&["ls", "--vault", v, USER, "INBOX"]);
    let uids = |j: &serde_json::Value| -> Vec<(u64, bool, Vec<String>)> {
        j["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["uid"].as_u64().unwrap(),
                    m["expunged"].as_bool().unwrap(),
                    m["flags"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f.as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect()
    };
    let one = uids(&ls1);
    let two = uids(&ls2);
    assert_eq!(one.len(), 6);
    assert!(one.iter().all(|(_, x, _)| !x));
    assert_eq!(one[0].2, ["\\Seen"]);
    assert!(one[1].2.is_empty());
    let u2 = two.iter().find(|m| m.0 == 2).unwrap();
    assert_eq!(u2.2, vec!["\\Answered", "$Important"]);
    let u3 = two.iter().find(|m| m.0 == 3).unwrap();
    assert!(
        u3.1,
        "uid 3 is expunged at run 2 (Cyrus keeps the file): {two:?}"
    );
    assert_eq!(two.last().unwrap().0, 7, "the new message");
    // The expunged message is still readable as of run 1.
    let o = cyrvault(&["cat", "--vault", v, USER, "INBOX", "3", "--run", "1"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, message(2, 3000 + 1400));
    // --at picks the run that had started by then.
    let at = admin::format_time(fx.t0 + 1500);
    assert_eq!(json(&["ls", "--vault", v, USER, "--at", &at])["run"], 1);
    // The renamed folder: one uniqueid, two names; the deleted one is shown as such.
    let show = json(&["show", "--vault", v, USER]);
    let folders = show["folders"].as_array().unwrap();
    let projects = folders.iter().find(|f| f["name"] == "Projects").unwrap();
    let names: Vec<&str> = projects["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Work", "Projects"]);
    let old = folders.iter().find(|f| f["name"] == "Old").unwrap();
    assert_eq!(old["deleted"], true);
    assert_eq!(old["last_run"], 1);
    let runs = show["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0]["messages_added"], 11, "12 appends, one duplicate");
    assert_eq!(runs[1]["messages_added"], 1);
    assert_eq!(runs[2]["messages_added"], 0);
    // Nothing is wrong.
    let ver = json(&["verify", "--vault", v, USER]);
    assert_eq!(ver["ok"], true, "{ver}");

    let before = answers(&fx);
    let dump_before = Catalog::open_existing(&fx.catalog)
        .unwrap()
        .dump_canonical()
        .unwrap();

    // Delete the catalog; rebuild it from the archive alone.
    for suffix in ["", "-wal", "-shm"] {
        let mut p = fx.catalog.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    assert!(
        !cyrvault(&["ls", "--vault", v, &fx.archive.to_string_lossy()])
            .status
            .success()
    );
    let r = json(&["reindex", "--vault", v, &fx.archive.to_string_lossy()]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["users"][0]["runs_indexed"], serde_json::json!([1, 2, 3]));

    let dump_after = Catalog::open_existing(&fx.catalog)
        .unwrap()
        .dump_canonical()
        .unwrap();
    assert_eq!(dump_before, dump_after, "dump_canonical");
    let after = answers(&fx);
    assert_eq!(before.len(), after.len());
    for (k, v) in &before {
        assert_eq!(Some(v), after.get(k), "{k}");
    }
    // A second reindex (catalog present) changes nothing either.
    let _ = json(&["reindex", "--vault", v, "--all"]);
    assert_eq!(
        Catalog::open_existing(&fx.catalog)
            .unwrap()
            .dump_canonical()
            .unwrap(),
        dump_before
    );
    std::fs::remove_dir_all(&fx.vault).unwrap();
}

#[test]
fn list_stale_and_stats() {
    let mut fx = Fixture::new("list", 16 << 20);
    for n in 0..3 {
        fx.append(None, &[], n, 2000);
    }
    fx.backup(&["INBOX"]);
    fx.backup(&["INBOX"]);
    let v = fx.vault.to_str().unwrap();
    let l = json(&["list", "--vault", v]);
    let u = &l["users"][0];
    assert_eq!(u["user"], USER);
    assert_eq!(u["runs"], 2);
    assert_eq!(u["last_run"], 2);
    assert_eq!(
        u["archive_bytes"].as_u64().unwrap(),
        std::fs::metadata(&fx.archive).unwrap().len()
    );
    // The runs are dated 2025-11: stale by any recent measure, not by a century.
    let o = cyrvault(&["list", "--vault", v, "--stale", "26h", "--json"]);
    assert_eq!(o.status.code(), Some(1), "a stale user is listed: exit 1");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["users"].as_array().unwrap().len(), 1);
    let o = cyrvault(&["list", "--vault", v, "--stale", "36500d", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["users"].as_array().unwrap().is_empty());

    let s = json(&["stats", "--vault", v]);
    let t = &s["users"][0];
    let unique: u64 = (0..3).map(|n| message(n, 2000).len() as u64).sum();
    assert_eq!(t["unique_bytes"], unique);
    assert_eq!(
        t["raw_bytes"],
        2 * unique,
        "two runs held the same three messages"
    );
    assert_eq!(t["dedup_ratio"], 2.0);
    assert_eq!(t["runs"], 2);
    let stored = t["stored_compressed_bytes"].as_u64().unwrap();
    assert!(stored > 0 && stored < t["archive_bytes"].as_u64().unwrap());
    // Human output of every command works too.
    for args in [
        vec!["list", "--vault", v],
        vec!["show", "--vault", v, USER],
        vec!["ls", "--vault", v, USER],
        vec![
            "ls",
            "--vault",
            v,
            USER,
            "INBOX",
            "--at",
            "2030-01-01 00:00",
        ],
        vec!["stats", "--vault", v],
        vec!["verify", "--vault", v, "--all"],
    ] {
        let o = cyrvault(&args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!o.stdout.is_empty(), "{args:?}");
    }
    // Unknown users, runs and times are errors with a status.
    assert_eq!(
        cyrvault(&["show", "--vault", v, "nobody"]).status.code(),
        Some(66)
    );
    assert_eq!(
        cyrvault(&["ls", "--vault", v, USER, "--run", "9"])
            .status
            .code(),
        Some(66)
    );
    assert_eq!(
        cyrvault(&["ls", "--vault", v, USER, "--at", "last tuesday"])
            .status
            .code(),
        Some(64)
    );
    std::fs::remove_dir_all(&fx.vault).unwrap();
}
