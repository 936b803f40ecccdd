//! Reading: stock `tar -xzf` gives files that hash to their names; `cat` reads one
//! member, not the archive; timings.

use super::*;

/// `tar -xzf ARCHIVE -C OUT`, then every `messages/<g0g1>/<guid>` file must hash to its
/// name and sit in its shard; returns how many there are.
pub(super) fn extract_and_check(archive: &Path, out: &Path) -> u64 {
    std::fs::create_dir_all(out).unwrap();
    let o = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut n = 0;
    for shard in std::fs::read_dir(out.join("messages")).unwrap() {
        let shard = shard.unwrap().path();
        for f in std::fs::read_dir(&shard).unwrap() {
            let p = f.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            assert_eq!(Guid::of(&read(&p)).to_hex(), name, "{}", p.display());
            assert_eq!(&name[..2], shard.file_name().unwrap().to_str().unwrap());
            n += 1;
        }
    }
    n
}

#[test]
fn stock_tar_extracts_messages_that_hash_to_their_names() {
    let fx = history_fixture("tar", 12 << 10);
    let n = extract_and_check(&fx.archive, &fx.vault.join("x"));
    let stats = Catalog::open_existing(&fx.catalog)
        .unwrap()
        .stats()
        .unwrap();
    assert_eq!(n, stats.messages, "every stored message extracted");
    assert!(fx.vault.join("x/runs/000003.json").is_file());
    std::fs::remove_dir_all(&fx.vault).unwrap();
}

#[test]
fn cat_reads_one_member_not_the_archive() {
    let mut fx = Fixture::new("onemember", 256 << 10);
    fx.sb.create_folder(USER, "Work", None).unwrap();
    for n in 0..40 {
        fx.append(if n % 3 == 0 { Some("Work") } else { None }, &[], n, 50_000);
    }
    fx.backup(&["INBOX", "Work"]);
    let ua = fx.ua();
    let cat = ua.open_catalog().unwrap();
    let scan = archive::scan(&fx.archive).unwrap();
    let len = std::fs::metadata(&fx.archive).unwrap().len();
    let sizes: HashMap<u64, u64> = scan
        .members
        .iter()
        .map(|m| (m.offset, m.compressed_len))
        .collect();
    let mut n = 0;
    for m in &scan.members {
        for e in &m.entries {
            let EntryName::Message(g) = archive::parse_entry_name(&e.name) else {
                continue;
            };
            let mut r = Counting {
                inner: std::fs::File::open(&fx.archive).unwrap(),
                read: 0,
            };
            let got = admin::read_message(&cat, &mut r, &fx.archive, &g).unwrap();
            assert_eq!(Guid::of(&got.bytes), g);
            let member = sizes[&got.member_offset];
            // At most the member plus one read buffer of look-ahead.
            assert!(
                r.read <= member + 64 * 1024,
                "cat of {g} read {} bytes; its member is {member}, the archive {len}",
                r.read
            );
            n += 1;
        }
    }
    assert_eq!(n, 40);
    let biggest = sizes.values().max().copied().unwrap_or(0);
    assert!(
        scan.members.len() >= 6 && len > 4 * (biggest + 64 * 1024),
        "the archive is many members ({} members, {len} bytes)",
        scan.members.len()
    );
    std::fs::remove_dir_all(&fx.vault).unwrap();
}

/// Timings of the admin commands on a ~40 MB archive (debug build; run with
/// `cargo test --test tests admin::measure -- --ignored --nocapture`). The numbers are
/// in doc/admin.md.
#[test]
#[ignore]
fn measure_admin_commands() {
    use std::time::Instant;
    let mut fx = Fixture::new("measure", 16 << 20);
    for f in ["Work", "Lists"] {
        fx.sb.create_folder(USER, f, None).unwrap();
    }
    let t = Instant::now();
    let mut c = fx.sb.login(USER).unwrap();
    for n in 0..700u32 {
        let folder = fx
            .sb
            .user_mailbox_name([None, Some("Work"), Some("Lists")][(n % 3) as usize]);
        let size = [4_000, 12_000, 60_000, 150_000][(n % 4) as usize];
        c.append(&folder, &[], Some(fx.t0 - 86_400), &message(n, size))
            .unwrap();
    }
    c.logout().unwrap();
    eprintln!("appended 700 messages in {:?}", t.elapsed());
    fx.backup(&["INBOX", "Work", "Lists"]);
    let len = std::fs::metadata(&fx.archive).unwrap().len();
    let stats = Catalog::open_existing(&fx.catalog)
        .unwrap()
        .stats()
        .unwrap();
    let v = fx.vault.to_str().unwrap().to_string();
    let time = |args: &[&str]| {
        let t = Instant::now();
        let o = cyrvault(args);
        assert!(o.status.success(), "{args:?}");
        t.elapsed()
    };
    eprintln!(
        "archive {len} bytes, {} messages, {} raw bytes, {} members",
        stats.messages,
        stats.unique_bytes,
        archive::scan(&fx.archive).unwrap().members.len()
    );
    let dv = time(&["verify", "--vault", &v, USER, "--json"]);
    eprintln!(
        "verify: {dv:?} = {:.1} MB/s of message data",
        stats.unique_bytes as f64 / 1e6 / dv.as_secs_f64()
    );
    let dr = time(&["reindex", "--vault", &v, USER, "--json"]);
    eprintln!(
        "reindex: {dr:?} = {:.1} MB/s",
        stats.unique_bytes as f64 / 1e6 / dr.as_secs_f64()
    );
    eprintln!("list: {:?}", time(&["list", "--vault", &v, "--json"]));
    eprintln!("show: {:?}", time(&["show", "--vault", &v, USER, "--json"]));
    eprintln!(
        "ls INBOX: {:?}",
        time(&["ls", "--vault", &v, USER, "INBOX", "--json"])
    );
    eprintln!("stats: {:?}", time(&["stats", "--vault", &v, "--json"]));
    // cat: process wall time, and in-library time and bytes read from the file.
    let ua = fx.ua();
    let cat = ua.open_catalog().unwrap();
    let guids: Vec<Guid> = cat
        .records_at(
            &cat.folder_by_name_at("Lists", 1).unwrap().unwrap().uniqueid,
            1,
        )
        .unwrap()
        .iter()
        .map(|r| r.guid)
        .collect();
    let mut wall = Vec::new();
    let mut lib = Vec::new();
    let mut read_bytes = Vec::new();
    for g in guids.iter().step_by(8) {
        wall.push(time(&["cat", "--vault", &v, USER, &g.to_hex()]));
        let mut r = Counting {
            inner: std::fs::File::open(&fx.archive).unwrap(),
            read: 0,
        };
        let t = Instant::now();
        admin::read_message(&cat, &mut r, &fx.archive, g).unwrap();
        lib.push(t.elapsed());
        read_bytes.push(r.read);
    }
    wall.sort();
    lib.sort();
    read_bytes.sort();
    eprintln!(
        "cat ({} messages): process median {:?} max {:?}; read_message median {:?} max {:?}; \
         bytes read from the archive median {} max {} (archive {len})",
        wall.len(),
        wall[wall.len() / 2],
        wall[wall.len() - 1],
        lib[lib.len() / 2],
        lib[lib.len() - 1],
        read_bytes[read_bytes.len() / 2],
        read_bytes[read_bytes.len() - 1]
    );
    // CYRVAULT_KEEP=1 keeps the vault (to try the commands by hand).
    if std::env::var_os("CYRVAULT_KEEP").is_none() {
        std::fs::remove_dir_all(&fx.vault).unwrap();
    } else {
        eprintln!("vault kept: {}", fx.vault.display());
    }
}

/// `show` and `stats` on a large catalog (200,000 messages and records in one folder,
/// 3 runs), built with the catalog API: `show` reads the catalog's locations through
/// `dump_canonical`, so this is its cost at scale. Ignored: timing only.
#[test]
#[ignore]
fn measure_show_on_a_large_catalog() {
    use std::time::Instant;
    let dir = scratch("bigcat");
    let archive = dir.join("big.tar.gz");
    std::fs::write(&archive, b"").unwrap();
    let ua = UserArchive::from_archive_path(&archive);
    let mut cat = Catalog::open(&ua.catalog).unwrap();
    let n = 200_000u32;
    let records: Vec<RecordState> = (1..=n)
        .map(|uid| RecordState {
            uid,
            guid: Guid::of(&uid.to_le_bytes()),
            system_flags: 16,
            keywords: vec![],
            internaldate: 1_700_000_000,
            size: 10_000,
            modseq: u64::from(uid),
            last_updated: 1_700_000_000,
            savedate: 0,
        })
        .collect();
    let messages: Vec<(Guid, EntryLoc)> = records
        .iter()
        .map(|r| {
            (
                r.guid,
                EntryLoc {
                    member_offset: u64::from(r.uid / 1000) * 1_000_000,
                    offset_in_member: u64::from(r.uid % 1000) * 10_752,
                    size: 10_000,
                },
            )
        })
        .collect();
    let rows: Vec<MemberRow> = (0..=n / 1000)
        .map(|i| MemberRow {
            offset: u64::from(i) * 1_000_000,
            compressed_len: 1_000_000,
            uncompressed_len: 10_752_000,
            crc32: None,
        })
        .collect();
    for run in 1..=3u64 {
        let m = RunManifest {
            format: MANIFEST_FORMAT,
            run,
            user: "big".into(),
            started: 1_700_000_000 + run as i64,
            finished: 1_700_000_000 + run as i64,
            server: "s".into(),
            tool_version: "t".into(),
            folders: vec![FolderInRun {
                uniqueid: "big-inbox".into(),
                name: "INBOX".into(),
                internal_name: "user.big".into(),
                deleted: false,
                state: Default::default(),
                snapshot_run: 1,
                deleted_at: None,
            }],
            user_state: None,
            members: vec![],
        };
        let mut snaps = HashMap::new();
        snaps.insert(
            "big-inbox".to_string(),
            (FolderMeta::default(), records.clone()),
        );
        let first = run == 1;
        cat.write_run(
            &m,
            &RunParts {
                manifest_loc: None,
                members: if first { &rows } else { &[] },
                messages: if first { &messages } else { &[] },
                snapshots: &snaps,
                user_files: &[],
            },
        )
        .unwrap();
    }
    drop(cat);
    let t = Instant::now();
    let s = admin::show(&ua).unwrap();
    eprintln!("show: {:?} ({} runs)", t.elapsed(), s.runs.len());
    assert_eq!(s.runs[0].messages_added, u64::from(n));
    let t = Instant::now();
    let st = admin::stats(std::slice::from_ref(&ua)).unwrap();
    eprintln!(
        "stats: {:?} (raw {} bytes)",
        t.elapsed(),
        st.total.totals.raw_bytes
    );
    let t = Instant::now();
    let dump = ua.open_catalog().unwrap().dump_canonical().unwrap();
    eprintln!(
        "dump_canonical alone: {:?}, {} bytes",
        t.elapsed(),
        dump.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
