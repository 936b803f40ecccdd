//! Cyrus 3.13's own files: `../shared/fixtures/cyrus-3.13-spool/` (beside the
//! clone; its README says how a real Cyrus 3.13 wrote it) holds a spool and config
//! with `J` records in mailboxes.db, index minor version 20, UUID directories, a
//! delayed-deleted folder, special-use and a comment, and Cyrus 3.13's own
//! `ctl_mboxlist -d` and `mbexamine` output. Our parsers, and cyrvaultd reading
//! that tree in stdio mode as the cyrus user, must agree with that oracle exactly.
//! A missing fixture fails the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use cyrvault::cyrus::annotations::{AnnotationDb, parse_annotations};
use cyrvault::cyrus::config::parse_imapd_conf;
use cyrvault::cyrus::header::{HeaderFormat, parse_header, write_header};
use cyrvault::cyrus::index::parse_index;
use cyrvault::cyrus::mboxlist::{Mboxlist, parse_mboxlist};
use cyrvault::cyrus::{Guid, paths, twoskip};
use cyrvault::protocol::client::{Client, Collect};
use cyrvault::protocol::request::Request;

/// The fixture directory (`CARGO_MANIFEST_DIR/../shared/fixtures/cyrus-3.13-spool`).
fn fixture_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/cyrus-3.13-spool");
    assert!(
        d.join("spool.tar.gz").is_file(),
        "the Cyrus 3.13 fixture is missing: {} (CI keeps shared/ beside the clone)",
        d.display()
    );
    d
}

fn oracle(name: &str) -> Vec<u8> {
    let p = fixture_dir().join("oracle").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The fixture unpacked into a scratch directory owned by cyrus, with its
/// imapd.conf (`@ROOT@` replaced); removed when dropped.
struct Tree {
    root: PathBuf,
    imapd_conf: PathBuf,
}

impl Tree {
    fn unpack(tag: &str) -> Tree {
        static N: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "cyrvault-313-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let st = Command::new("tar")
            .arg("xzf")
            .arg(fixture_dir().join("spool.tar.gz"))
            .arg("-C")
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success(), "tar xzf spool.tar.gz: {st}");
        let conf = std::fs::read_to_string(fixture_dir().join("imapd.conf.in"))
            .unwrap()
            .replace("@ROOT@", &root.display().to_string());
        let imapd_conf = root.join("imapd.conf");
        // stdio mode serves without a secret only when told to (a test, locally)
        std::fs::write(
            &imapd_conf,
            format!("{conf}cyrvaultd_allow_unauthenticated: yes\n"),
        )
        .unwrap();
        let st = Command::new("chown")
            .args(["-R", "cyrus:mail"])
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success());
        Tree { root, imapd_conf }
    }

    fn conf_text(&self) -> String {
        std::fs::read_to_string(&self.imapd_conf).unwrap()
    }

    fn mboxlist(&self) -> Mboxlist {
        let db = std::fs::read(self.root.join("conf/mailboxes.db")).unwrap();
        parse_mboxlist(&twoskip::read_all(&db).unwrap(), "DELETED").unwrap()
    }

    /// The data directory of a mailbox, as `paths` computes it.
    fn dir_of(&self, ml: &Mboxlist, name: &str) -> PathBuf {
        let conf = parse_imapd_conf(&self.conf_text(), "imapd.conf", None).unwrap();
        let e = ml.get(name).unwrap_or_else(|| panic!("no {name}"));
        paths::mailbox_data_dir(
            &conf,
            e.partition.as_deref().unwrap(),
            &e.name,
            e.uniqueid.as_deref(),
            e.mbtype.is_legacy_dirs(),
        )
        .unwrap()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The six mailboxes mbexamine was run on: (oracle file, internal name).
fn examined() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(fixture_dir().join("oracle"))
        .unwrap()
        .filter_map(|e| {
            let f = e.unwrap().file_name().to_string_lossy().into_owned();
            let stem = f.strip_prefix("mbexamine-")?.strip_suffix(".txt")?;
            Some((f.clone(), stem.replace('_', ".")))
        })
        .collect();
    v.sort();
    assert_eq!(v.len(), 6, "{v:?}");
    v
}

#[test]
fn mailboxes_db_equals_ctl_mboxlist_d() {
    let t = Tree::unpack("mboxlist");
    let ml = t.mboxlist();
    let want: serde_json::Value = serde_json::from_slice(&oracle("ctl_mboxlist-d.json")).unwrap();
    assert_eq!(ml.to_ctl_mboxlist_json(), want);
    assert_eq!(ml.users(), ["alice", "bob"]);
    // What 3.13 wrote beside N and I: J records and J fields, read as markers of
    // 3.13, skipped as lookups.
    let k = &ml.kinds;
    assert!(k.jmap_ids > 0 && k.jmapid_fields > 0, "{k:?}");
    assert_eq!((k.unknown, k.newest_marker()), (0, Some((3, 13))));
    let deleted = ml
        .entries()
        .iter()
        .find(|e| e.deleted.is_some())
        .expect("the delayed-deleted folder");
    assert_eq!(
        deleted.deleted.as_ref().unwrap().original_name,
        "user.alice.Archive.2024"
    );
    // The JMAP id is in every entry of this release.
    assert!(
        ml.entries()
            .iter()
            .all(|e| e.jmapid.as_deref() == Some("P-F"))
    );
}

#[test]
fn inspect_mailboxes_does_not_call_3_13_pre_3_6() {
    let t = Tree::unpack("inspect");
    let out = Command::new(crate::bins::cyrvault())
        .args(["inspect", "mailboxes"])
        .arg(t.root.join("conf/mailboxes.db"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !text.contains("pre-3.6") && !err.contains("ctl_cyrusdb"),
        "{text}{err}"
    );
    assert!(text.contains("written by Cyrus 3.13 or newer"), "{text}");
    assert!(text.contains("2 JMAP-id"), "{text}");
}

#[test]
fn index_cache_and_header_agree_with_mbexamine() {
    let t = Tree::unpack("index");
    let ml = t.mboxlist();
    let root = t.root.display().to_string();
    for (file, name) in examined() {
        let ex = oracle(&file);
        let text = String::from_utf8_lossy(&ex);
        let dir = t.dir_of(&ml, &name);
        // Our path computation (UUID directories) gives the path mbexamine printed.
        let printed = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Path to mailbox: "))
            .unwrap()
            .replace("@ROOT@", &root);
        assert_eq!(dir, PathBuf::from(printed), "{name}");
        let hb = std::fs::read(dir.join("cyrus.header")).unwrap();
        let h = parse_header(&hb).unwrap();
        assert_eq!(h.format, HeaderFormat::Dlist313, "{name}");
        assert_eq!(h.name.as_deref(), Some(name.as_str()));
        assert_eq!(
            write_header(&h),
            hb,
            "{name}: header written back byte-identically"
        );
        let ib = std::fs::read(dir.join("cyrus.index")).unwrap();
        let idx = parse_index(&ib).unwrap();
        assert_eq!(idx.header.minor_version, 20, "{name}");
        let cache = std::fs::read(dir.join("cyrus.cache")).unwrap_or_default();
        crate::cyrus_index::agrees_with_mbexamine(&name, &idx, &h.user_flags, &ex, &cache);
        let ex = crate::mbexamine::parse_mbexamine(&ex);
        assert_eq!(Some(ex.uniqueid.as_str()), h.uniqueid.as_deref(), "{name}");
        assert_eq!(ex.acl, h.acl, "{name}");
    }
}

#[test]
fn annotations_db_reads() {
    let t = Tree::unpack("annot");
    let ml = t.mboxlist();
    let db = std::fs::read(t.root.join("conf/annotations.db")).unwrap();
    let rows = parse_annotations(&twoskip::read_all(&db).unwrap(), AnnotationDb::Global).unwrap();
    let id = |n: &str| ml.get(n).unwrap().uniqueid.clone().unwrap();
    let find = |uid: &str, entry: &str| {
        rows.iter()
            .find(|a| a.mailbox_id == uid.as_bytes() && a.entry == entry.as_bytes())
            .map(|a| String::from_utf8_lossy(&a.value).into_owned())
    };
    assert_eq!(
        find(&id("user.alice.Sent"), "/specialuse").as_deref(),
        Some("\\Sent")
    );
    assert_eq!(
        find(&id("user.alice"), "/comment").as_deref(),
        Some("fixture 3.13")
    );
}

/// `cyrvaultd -C <conf> -X` (stdio mode) as the cyrus user.
fn cyrvaultd(t: &Tree) -> Child {
    let cyrus = nix::unistd::User::from_name("cyrus").unwrap().unwrap();
    Command::new(env!("CARGO_BIN_EXE_cyrvaultd"))
        .arg("-C")
        .arg(&t.imapd_conf)
        .arg("-X")
        .env("CYRUS_SERVICE", "cyrvaultd")
        .uid(cyrus.uid.as_raw())
        .gid(cyrus.gid.as_raw())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting cyrvaultd -X")
}

#[test]
fn cyrvaultd_serves_the_3_13_spool_as_the_oracle_says() {
    let t = Tree::unpack("service");
    let ml = t.mboxlist();
    let want: serde_json::Value = serde_json::from_slice(&oracle("ctl_mboxlist-d.json")).unwrap();
    let mut child = cyrvaultd(&t);
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let mut c = Client::new(stdout, stdin, b"localhost");

    assert_eq!(c.users().unwrap(), [b"alice".to_vec(), b"bob".to_vec()]);
    let mut examined_by_uniqueid = BTreeMap::new();
    for (file, name) in examined() {
        let id = ml.get(&name).unwrap().uniqueid.clone().unwrap();
        examined_by_uniqueid.insert(id, (file, name));
    }
    let mut checked = 0;
    for user in ["alice", "bob"] {
        let listed = c.fmultistatus(user.as_bytes()).unwrap();
        // Every live mailbox of the user in the oracle, and nothing else: the
        // tombstones (`d`) are not folders, the delayed-deleted copy is.
        let theirs: BTreeSet<String> = want
            .as_object()
            .unwrap()
            .values()
            .filter(|e| !e["mbtype"].as_str().unwrap().contains('d'))
            .filter(|e| {
                let n = e["name"].as_str().unwrap();
                n == format!("user.{user}")
                    || n.starts_with(&format!("user.{user}."))
                    || n.starts_with(&format!("DELETED.user.{user}."))
            })
            .map(|e| e["uniqueid"].as_str().unwrap().to_string())
            .collect();
        let ours: BTreeSet<String> = listed
            .iter()
            .map(|f| String::from_utf8(f.uniqueid.clone()).unwrap())
            .collect();
        assert_eq!(ours, theirs, "{user}");
        for f in &listed {
            assert_eq!(f.jmapid, b"P-F", "3.13's JMAP id in FOLDER");
            let uid = String::from_utf8(f.uniqueid.clone()).unwrap();
            let Some((file, name)) = examined_by_uniqueid.get(&uid) else {
                continue;
            };
            // The index and header as the service sends them, against mbexamine.
            let mut got = Collect::default();
            let done = c
                .fetch(
                    &Request::FMeta {
                        slot: b"localhost".to_vec(),
                        user: user.as_bytes().to_vec(),
                        folder: f.name.clone(),
                        items: Some(vec![b"header".to_vec(), b"index".to_vec()]),
                    },
                    &mut got,
                )
                .unwrap();
            assert_eq!(
                done,
                [b"FMETA".to_vec(), f.uniqueid.clone(), b"P-F".to_vec()]
            );
            let [(_, hb), (_, ib)] = &got.files[..] else {
                panic!("{name}: header and index, got {:?}", got.missing)
            };
            let idx = parse_index(ib).unwrap();
            let h = parse_header(hb).unwrap();
            let dir = t.dir_of(&ml, name);
            let cache = std::fs::read(dir.join("cyrus.cache")).unwrap_or_default();
            let ex = oracle(file);
            crate::cyrus_index::agrees_with_mbexamine(name, &idx, &h.user_flags, &ex, &cache);
            // Every live message, by the GUIDs mbexamine printed.
            let ex = crate::mbexamine::parse_mbexamine(&ex);
            let uids: Vec<u32> = ex.records.iter().map(|r| r.nums["UID:"] as u32).collect();
            let mut msgs = Collect::default();
            c.fdata(user.as_bytes(), &f.name, &uids, &mut msgs).unwrap();
            assert!(msgs.missing.is_empty(), "{name}: {:?}", msgs.missing);
            let guids: Vec<String> = msgs
                .files
                .iter()
                .map(|(_, b)| Guid::of(b).to_hex())
                .collect();
            let theirs: Vec<String> = ex.records.iter().map(|r| r.guid.clone()).collect();
            assert_eq!(guids, theirs, "{name}");
            checked += 1;
        }
    }
    assert_eq!(
        checked, 6,
        "every examined mailbox was read through the service"
    );
    c.quit().unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "cyrvaultd -X exited {st}");

    // The user namespace lock it took is 3.12's name (`*U*user.alice`, a path like
    // a mailbox name's; this config has no hashimapspool), found from
    // mailboxes.db's 3.13 records: not 3.10's `*U*alice`.
    let lock = t.root.join("conf/lock");
    assert!(lock.join("*U*user/alice.lock").exists(), "{}", list(&lock));
    assert!(lock.join("*U*user/bob.lock").exists(), "{}", list(&lock));
    assert!(!lock.join("*U*alice.lock").exists(), "{}", list(&lock));
}

/// Every file below `dir`, for failure messages.
fn list(dir: &Path) -> String {
    let out = Command::new("find").arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The service's per-owner reads of mailboxes.db (issue #10: lookups and walks of
/// the owner's key ranges) on Cyrus 3.13's own file, whose `J` records (JMAP ids)
/// sort between the `I` and `N` ranges: each owner's entries equal the whole-file
/// parse's, users whose names prefix each other's included, and the two users'
/// entries are all of the file's.
#[test]
fn owner_ranges_of_a_3_13_mailboxes_db() {
    use cyrvault::spool::{Owner, Spool, owner_keys};
    let t = Tree::unpack("ranges");
    let whole = t.mboxlist();
    let db = std::fs::read(t.root.join("conf/mailboxes.db")).unwrap();
    let raw = twoskip::read_all(&db).unwrap();
    assert!(
        raw.iter().any(|(k, _)| k.first() == Some(&b'J')),
        "the 3.13 fixture has no J records"
    );
    let conf = cyrvault::cyrus::config::load(Some(&t.imapd_conf), None).unwrap();
    let sp = Spool::open(conf, std::time::Duration::from_secs(10)).unwrap();
    let mut total = 0;
    for u in ["alice", "bob", "al", "alicex", "nobody", "%user", "%shared"] {
        let own = sp.owner_mboxlist(u).unwrap();
        let want: Vec<_> = match Owner::parse(u, false, "DELETED") {
            Some(o) => {
                let keys = owner_keys(&o, "DELETED");
                whole
                    .entries()
                    .iter()
                    .filter(|e| keys.contains(&e.dbname))
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        assert_eq!(own.entries(), want.as_slice(), "{u}");
        total += own.entries().len();
    }
    let alice = sp.owner_mboxlist("alice").unwrap();
    assert!(
        alice
            .entries()
            .iter()
            .any(|e| e.name.starts_with("DELETED.user.alice.")),
        "{alice:?}"
    );
    assert_eq!(total, whole.entries().len());
}
