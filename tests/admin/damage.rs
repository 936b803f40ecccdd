//! Damage and crashes: a flipped byte in a middle member, a run committed in the
//! archive but not the catalog, an archive cut shorter than its catalog.

use super::*;

/// Flip one byte in the middle of a member that holds messages (not the first or last
/// member): `verify` names that member and exactly the messages in it, with their
/// folders and UIDs and runs, exits 65; every other message still reads back.
#[test]
fn a_flipped_byte_is_named_with_exactly_what_it_costs() {
    let fx = history_fixture("damage", 12 << 10);
    let v = fx.vault.to_str().unwrap();
    let scan = archive::scan(&fx.archive).unwrap();
    assert!(scan.damage.is_empty());
    let with_messages = message_members(&scan);
    assert!(with_messages.len() >= 5, "{} members", with_messages.len());
    let victim = with_messages[with_messages.len() / 2];
    let lost: Vec<Guid> = victim
        .entries
        .iter()
        .filter_map(|e| match archive::parse_entry_name(&e.name) {
            EntryName::Message(g) => Some(g),
            _ => None,
        })
        .collect();
    let all_guids: Vec<Guid> = scan
        .members
        .iter()
        .flat_map(|m| &m.entries)
        .filter_map(|e| match archive::parse_entry_name(&e.name) {
            EntryName::Message(g) => Some(g),
            _ => None,
        })
        .collect();
    // Which folder/uid holds each lost message, from the catalog before the damage.
    let cat = Catalog::open_existing(&fx.catalog).unwrap();
    let expect_uses: BTreeMap<String, Vec<(String, u64)>> = cat
        .messages_in_member(victim.offset)
        .unwrap()
        .into_iter()
        .map(|m| {
            let mut u: Vec<(String, u64)> = m
                .uses
                .iter()
                .map(|u| (u.uniqueid.clone(), u64::from(u.uid)))
                .collect();
            u.sort();
            (m.guid.to_hex(), u)
        })
        .collect();
    drop(cat);

    let mut bytes = read(&fx.archive);
    let at = (victim.offset + victim.compressed_len / 2) as usize;
    bytes[at] ^= 0x5a;
    std::fs::write(&fx.archive, &bytes).unwrap();

    let o = cyrvault(&["verify", "--vault", v, USER, "--json"]);
    assert_eq!(
        o.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let u = &j["users"][0];
    assert_eq!(u["ok"], false);
    let damaged = u["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{u}");
    assert_eq!(damaged[0]["offset"], victim.offset);
    assert_eq!(
        damaged[0]["catalog_members"],
        serde_json::json!([victim.offset])
    );
    let got: BTreeMap<String, Vec<(String, u64)>> = damaged[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut uses: Vec<(String, u64)> = m["uses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    (
                        x["uniqueid"].as_str().unwrap().into(),
                        x["uid"].as_u64().unwrap(),
                    )
                })
                .collect();
            uses.sort();
            (m["guid"].as_str().unwrap().to_string(), uses)
        })
        .collect();
    let mut want: Vec<String> = lost.iter().map(Guid::to_hex).collect();
    want.sort();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want);
    assert_eq!(got, expect_uses);
    assert!(
        got.values().all(|u| !u.is_empty()),
        "every lost message names its folder and uid"
    );
    assert!(!damaged[0]["runs"].as_array().unwrap().is_empty());
    // Nothing else is reported: the rest of the archive was checked and is fine.
    assert_eq!(u["mismatches"], serde_json::json!([]), "{u}");
    assert_eq!(
        u["members_checked"].as_u64().unwrap() as usize,
        scan.members.len() - 1
    );
    // The human report names the member too.
    let o = cyrvault(&["verify", "--vault", v, USER]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("damaged member at offset {}", victim.offset)),
        "{text}"
    );
    assert!(text.contains(&lost[0].to_hex()), "{text}");

    // Every message outside the member still reads back.
    for g in all_guids.iter().filter(|g| !lost.contains(g)) {
        let o = cyrvault(&["cat", "--vault", v, USER, &g.to_hex()]);
        assert!(o.status.success(), "cat {g}");
        assert_eq!(Guid::of(&o.stdout), *g);
    }
    // In the damaged member, a message before the flipped byte still inflates and
    // hashes right; the rest fail loudly, never with wrong bytes. verify says which.
    let readable: BTreeMap<String, bool> = damaged[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["guid"].as_str().unwrap().to_string(),
                m["readable"].as_bool().unwrap(),
            )
        })
        .collect();
    let mut failed = 0;
    for g in &lost {
        let o = cyrvault(&["cat", "--vault", v, USER, &g.to_hex()]);
        if o.status.success() {
            assert_eq!(Guid::of(&o.stdout), *g, "cat {g} of a damaged member");
        } else {
            assert!(o.stdout.is_empty());
            failed += 1;
        }
        assert_eq!(readable[&g.to_hex()], o.status.success(), "{g}");
    }
    assert!(
        failed >= 1,
        "the message holding the flipped byte cannot be read"
    );

    // Reindex refuses a damaged archive and keeps the catalog as it was ...
    let before = read(&fx.catalog);
    let o = cyrvault(&["reindex", "--vault", v, USER, "--json"]);
    assert_eq!(o.status.code(), Some(65));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["users"][0]["refused"], true, "{j}");
    assert_eq!(read(&fx.catalog), before);
    // ... and with --salvage skips the damaged member, reports it and what it cost,
    // and indexes the rest.
    let o = cyrvault(&["reindex", "--vault", v, USER, "--salvage", "--json"]);
    assert_eq!(o.status.code(), Some(65));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &j["users"][0];
    assert_eq!(r["damaged"][0]["offset"], victim.offset, "{r}");
    let mut reported: Vec<String> = r["lost"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_string())
        .collect();
    reported.sort();
    let mut want: Vec<String> = lost.iter().map(Guid::to_hex).collect();
    want.sort();
    assert_eq!(reported, want, "{r}");
    let cat = Catalog::open_existing(&fx.catalog).unwrap();
    for g in &all_guids {
        assert_eq!(cat.has_message(g).unwrap(), !lost.contains(g), "{g}");
    }
    for g in all_guids.iter().filter(|g| !lost.contains(g)) {
        let o = cyrvault(&["cat", "--vault", v, USER, &g.to_hex()]);
        assert!(o.status.success(), "cat {g} after reindex");
    }
    std::fs::remove_dir_all(&fx.vault).unwrap();
}

/// A crash between the archive's fsync and the catalog commit leaves a run in the
/// archive that the catalog lacks, maybe with half a member after it: `verify` passes
/// with notes, `reindex` picks the run up. An archive *shorter* than its catalog (cut
/// behind our back) fails `verify`, naming the run.
#[test]
fn verify_tells_a_crash_leftover_from_a_short_archive() {
    let mut fx = Fixture::new("crash", 16 << 20);
    for n in 0..3 {
        fx.append(None, &[], n, 2000);
    }
    fx.backup(&["INBOX"]);
    fx.append(None, &[], 3, 2000);
    fx.backup(&["INBOX"]);
    let v = fx.vault.to_str().unwrap();

    // Run 3's manifest reaches the archive; the process dies before the catalog commit.
    let cat = Catalog::open_existing(&fx.catalog).unwrap();
    let m2 = cat.runs().unwrap()[1].manifest.unwrap();
    let mut f = std::fs::File::open(&fx.archive).unwrap();
    let bytes = archive::read_entry_at(
        &mut f,
        &fx.archive,
        m2.member_offset,
        m2.offset_in_member,
        m2.size,
    )
    .unwrap();
    drop(cat);
    let mut m3 = model::parse_manifest(&bytes).unwrap();
    m3.run = 3;
    m3.started += 1000;
    m3.finished += 1000;
    m3.members = vec![];
    let mut w = ArchiveWriter::open_with(
        &fx.archive,
        WriterOptions {
            committed_len: Some(fx.end),
            ..Default::default()
        },
    )
    .unwrap();
    w.add(
        &run_manifest_entry(&run_id(3)).unwrap(),
        &serde_json::to_vec(&m3).unwrap(),
        0,
    )
    .unwrap();
    let mm = w.finish_member().unwrap();
    drop(w);
    let m3_offset = mm[0].offset;
    // ... and half of a next member (a crash while appending it).
    let whole = read(&fx.archive);
    let member = whole[m3_offset as usize..].to_vec();
    let mut with_tail = whole.clone();
    with_tail.extend_from_slice(&member[..member.len() / 2]);
    std::fs::write(&fx.archive, &with_tail).unwrap();

    let j = json(&["verify", "--vault", v, USER]);
    let u = &j["users"][0];
    assert_eq!(u["ok"], true, "{u}");
    let notes = u["notes"].to_string();
    assert!(
        notes.contains("run 3 is committed in the archive"),
        "{notes}"
    );
    assert!(notes.contains("truncated member"), "{notes}");

    let r = json(&["reindex", "--vault", v, USER]);
    assert_eq!(
        r["users"][0]["runs_indexed"],
        serde_json::json!([1, 2, 3]),
        "{r}"
    );
    assert!(r["users"][0]["truncated_tail"].is_array());
    assert_eq!(json(&["verify", "--vault", v, USER])["ok"], true);
    assert_eq!(json(&["ls", "--vault", v, USER, "INBOX"])["run"], 3);

    // While a backup holds the archive's lock, reindex is refused as temporary (75);
    // readers take no lock, so verify still runs.
    let w = ArchiveWriter::open(&fx.archive).unwrap();
    let o = cyrvault(&["reindex", "--vault", v, USER]);
    assert_eq!(
        o.status.code(),
        Some(75),
        "reindex of a locked archive: try later"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(json(&["verify", "--vault", v, USER])["ok"], true);
    drop(w);

    // Now the archive is cut behind our back, before run 3's member.
    std::fs::write(&fx.archive, &whole[..m3_offset as usize]).unwrap();
    let o = cyrvault(&["verify", "--vault", v, USER, "--json"]);
    assert_eq!(o.status.code(), Some(65));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mism = j["users"][0]["mismatches"].to_string();
    assert!(mism.contains("run 3"), "{mism}");
    assert!(mism.contains("runs/000003.json"), "{mism}");
    std::fs::remove_dir_all(&fx.vault).unwrap();
}

/// A flipped byte in the member holding run 2's folder snapshots: `verify` names the
/// snapshots and the runs that need them; `reindex` refuses, `reindex --salvage` still
/// indexes every run (the folders keep their run-1 state where run 2's is lost) and
/// every message.
#[test]
fn a_damaged_snapshot_costs_only_its_folder_state() {
    let fx = history_fixture("meta", 12 << 10);
    let v = fx.vault.to_str().unwrap();
    let scan = archive::scan(&fx.archive).unwrap();
    let victim = scan
        .members
        .iter()
        .find(|m| {
            m.entries.iter().any(|e| {
                matches!(archive::parse_entry_name(&e.name),
                    EntryName::Folder { run, file, .. } if run == "000002" && file == "cyrus.index")
            }) && !m.entries.iter().any(|e| {
                matches!(
                    archive::parse_entry_name(&e.name),
                    EntryName::RunManifest { .. } | EntryName::Message(_)
                )
            })
        })
        .expect("a member holding only run 2's snapshots");
    let ls1 = json(&["ls", "--vault", v, USER, "INBOX", "--run", "1"]);
    let guids: Vec<String> = scan
        .members
        .iter()
        .flat_map(|m| &m.entries)
        .filter_map(|e| match archive::parse_entry_name(&e.name) {
            EntryName::Message(g) => Some(g.to_hex()),
            _ => None,
        })
        .collect();
    // A flipped bit can be inert (a code of a dynamic Huffman table the block never
    // uses): the member then inflates to the same bytes and verify is right to say ok.
    // Flip until the archive's own scan sees the member damaged, then ask verify.
    let whole = read(&fx.archive);
    let mid = victim.offset + victim.compressed_len / 2;
    let damaged = (0..64u64).find(|k| {
        let mut bytes = whole.clone();
        bytes[(mid + k) as usize] ^= 0x20;
        std::fs::write(&fx.archive, &bytes).unwrap();
        archive::scan(&fx.archive)
            .unwrap()
            .damage
            .iter()
            .any(|d| d.offset == victim.offset)
    });
    assert!(damaged.is_some(), "no flip in 64 bytes damaged the member");

    let o = cyrvault(&["verify", "--vault", v, USER, "--json"]);
    assert_eq!(o.status.code(), Some(65));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &j["users"][0]["damaged"][0];
    assert_eq!(d["offset"], victim.offset);
    assert_eq!(d["messages"], serde_json::json!([]));
    let meta = d["meta"].as_array().unwrap();
    assert!(
        meta.iter().any(|m| m["entry"].get("folder_index").is_some()
            && m["snapshot_run"] == 2
            && m["runs"] == serde_json::json!([2, 3])),
        "{d}"
    );
    assert_eq!(d["runs"], serde_json::json!([2, 3]));

    let o = cyrvault(&["reindex", "--vault", v, USER, "--json"]);
    assert_eq!(o.status.code(), Some(65));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["users"][0]["refused"], true, "{j}");
    let o = cyrvault(&["reindex", "--vault", v, USER, "--salvage", "--json"]);
    assert_eq!(o.status.code(), Some(65));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &j["users"][0];
    assert_eq!(r["runs_indexed"], serde_json::json!([1, 2, 3]), "{r}");
    assert!(
        r["problems"].to_string().contains("previous snapshot"),
        "{r}"
    );
    // Run 1 is untouched; at runs 2 and 3 INBOX shows its run-1 records.
    assert_eq!(
        json(&["ls", "--vault", v, USER, "INBOX", "--run", "1"]),
        ls1
    );
    let ls3 = json(&["ls", "--vault", v, USER, "INBOX", "--run", "3"]);
    assert_eq!(ls3["messages"], ls1["messages"]);
    for g in &guids {
        let o = cyrvault(&["cat", "--vault", v, USER, g]);
        assert!(o.status.success(), "cat {g}");
    }
    std::fs::remove_dir_all(&fx.vault).unwrap();
}
