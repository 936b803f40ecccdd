//! `cyrus::paths` against the real Cyrus 3.6 `mbpath -j`: scratch configurations
//! (hashimapspool on/off, fulldirhash on/off, virtual domains, a metapartition, two
//! partitions, archiving), mailboxes created offline with `ctl_cyrusdb -r` and
//! `ctl_mboxlist -u`, and every path we compute compared with what Cyrus prints.
//! Also home of [`Scratch`], the throwaway Cyrus configuration `tests/lock.rs` uses.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use cyrvault::cyrus::config::{self, ImapdConf};
use cyrvault::cyrus::paths::{self, MetaFile};

/// Where Debian installs Cyrus's tools.
pub const CYRUS_BIN: &str = "/usr/lib/cyrus/bin";

/// A private Cyrus configuration (no server) in a unique /tmp directory, owned by
/// cyrus:mail because Cyrus tools switch to the cyrus user. Removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
    pub conf_path: PathBuf,
    pub conf: ImapdConf,
}

/// One mailbox to create and check.
#[derive(Clone)]
pub struct Mb {
    pub name: &'static str,
    pub partition: &'static str,
    pub uniqueid: &'static str,
    pub legacy: bool,
    pub owner: Option<&'static str>,
    /// The owner's INBOX (uniqueid, legacy) if it exists.
    pub inbox: Option<(&'static str, bool)>,
}

pub fn cyrus_ids() -> (u32, u32) {
    let u = nix::unistd::User::from_name("cyrus")
        .expect("looking up cyrus")
        .expect("the cyrus user exists");
    (u.uid.as_raw(), u.gid.as_raw())
}

fn chown_tree(p: &Path, ids: (u32, u32)) {
    std::os::unix::fs::chown(p, Some(ids.0), Some(ids.1)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), ids);
        }
    }
}

impl Scratch {
    /// Make the directories, write `imapd.conf` (base + `extra`, where `{d}` stands
    /// for the scratch directory), and initialise the
    /// databases with `ctl_cyrusdb -r`.
    pub fn new(tag: &str, extra: &str) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = PathBuf::from(format!(
            "/tmp/cyrvault-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        for sub in [
            "conf", "spool", "spool2", "meta", "archive", "lock", "sieve",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        let text = format!(
            "configdirectory: {d}/conf\npartition-default: {d}/spool\npartition-p2: {d}/spool2\n\
             defaultpartition: default\nmboxname_lockpath: {d}/lock\nsievedir: {d}/sieve\n\
             unixhierarchysep: no\n{}",
            extra.replace("{d}", &d.to_string())
        );
        let conf_path = dir.join("imapd.conf");
        std::fs::write(&conf_path, &text).unwrap();
        chown_tree(&dir, cyrus_ids());
        let conf = config::load(Some(&conf_path), None).unwrap();
        let s = Scratch {
            dir,
            conf_path,
            conf,
        };
        s.ok("ctl_cyrusdb", &["-r"]);
        s
    }

    /// A Cyrus tool with `-C <our conf>` and `args`.
    pub fn cmd(&self, tool: &str, args: &[&str]) -> Command {
        let mut c = Command::new(Path::new(CYRUS_BIN).join(tool));
        c.arg("-C").arg(&self.conf_path).args(args);
        c
    }

    /// Run a tool to completion.
    pub fn run(&self, tool: &str, args: &[&str]) -> Output {
        self.cmd(tool, args).output().unwrap()
    }

    /// Run a tool that must succeed; returns stdout.
    pub fn ok(&self, tool: &str, args: &[&str]) -> String {
        let o = self.run(tool, args);
        assert!(
            o.status.success(),
            "{tool} {args:?}: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Insert mailboxes.db entries with `ctl_mboxlist -u` (the §7.5 JSON).
    pub fn create_mailboxes(&self, mbs: &[Mb]) {
        let mut obj = serde_json::Map::new();
        for m in mbs {
            let acl = serde_json::json!({ m.owner.unwrap_or("anyone"): "lrswipkxtecdan" });
            obj.insert(
                m.name.to_string(),
                serde_json::json!({
                    "name": m.name, "mbtype": if m.legacy { "el" } else { "e" },
                    "partition": m.partition, "acl": acl, "uniqueid": m.uniqueid,
                    "uidvalidity": "1795980113", "createdmodseq": "1", "foldermodseq": "1",
                }),
            );
        }
        let json = serde_json::Value::Object(obj).to_string();
        let mut child = self
            .cmd("ctl_mboxlist", &["-u"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(json.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "ctl_mboxlist -u");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The external name `mbpath` takes (admin namespace, `unixhierarchysep: no`).
fn external(internal: &str) -> String {
    match internal.split_once('!') {
        Some((dom, rest)) => format!("{rest}@{dom}"),
        None => internal.to_string(),
    }
}

fn mbpath_json(s: &Scratch, name: &str) -> serde_json::Value {
    let out = s.ok("mbpath", &["-j", &external(name)]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("mbpath -j {name}: {e}: {out}"))
}

fn p(v: &serde_json::Value) -> PathBuf {
    PathBuf::from(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
}

/// Compare every path we compute for `mbs` with `mbpath -j`.
fn check(s: &Scratch, mbs: &[Mb], meta_files_on_metapartition: bool) {
    let c = &s.conf;
    for m in mbs {
        let j = mbpath_json(s, m.name);
        let id = Some(m.uniqueid);
        let data = paths::mailbox_data_dir(c, m.partition, m.name, id, m.legacy).unwrap();
        assert_eq!(data, p(&j["data"]), "data of {}", m.name);
        let arch = paths::mailbox_archive_dir(c, m.partition, m.name, id, m.legacy).unwrap();
        assert_eq!(arch, p(&j["archive"]), "archive of {}", m.name);
        let meta = |f| paths::mailbox_meta_path(c, m.partition, m.name, id, m.legacy, f).unwrap();
        let meta_dir = p(&j["meta"]);
        if meta_files_on_metapartition || c.metapartition_dir(m.partition).is_none() {
            assert_eq!(
                meta(MetaFile::Header),
                meta_dir.join("cyrus.header"),
                "{}",
                m.name
            );
            assert_eq!(
                meta(MetaFile::Index),
                meta_dir.join("cyrus.index"),
                "{}",
                m.name
            );
        }
        // Not in metapartition_files: stays with the data.
        assert_eq!(
            meta(MetaFile::Cache),
            data.join("cyrus.cache"),
            "{}",
            m.name
        );
        assert_eq!(meta(MetaFile::Annotations), data.join("cyrus.annotations"));
        let mbname = &j["mbname"];
        assert_eq!(mbname["intname"].as_str(), Some(m.name));
        let comps = paths::internal_to_components(c, m.name);
        assert_eq!(
            comps.localpart.as_deref(),
            mbname["localpart"].as_str(),
            "{}",
            m.name
        );
        assert_eq!(
            comps.domain.as_deref(),
            mbname["domain"].as_str(),
            "{}",
            m.name
        );
        assert_eq!(comps.deleted, mbname["isdeleted"].as_u64(), "{}", m.name);
        let Some(owner) = m.owner else {
            assert!(
                j.get("user").is_none(),
                "shared mailbox {} has user files",
                m.name
            );
            continue;
        };
        assert_eq!(comps.userid().as_deref(), Some(owner));
        let (iid, ilegacy) = match m.inbox {
            Some((i, l)) => (Some(i), l),
            None => (None, true),
        };
        for suffix in [
            "seen",
            "sub",
            "counters",
            "conversations",
            "dav",
            "xapianactive",
        ] {
            let ours = paths::user_file_path(c, owner, iid, ilegacy, suffix).unwrap();
            assert_eq!(ours, p(&j["user"][suffix]), "{suffix} of {}", m.name);
        }
        if m.inbox.is_some() {
            let ours = paths::user_sieve_dir(c, owner, iid, ilegacy).unwrap();
            assert_eq!(ours, p(&j["user"]["sieve"]), "sieve of {}", m.name);
        }
    }
}

/// Make Cyrus create the mailboxes' files and lock files, then check that our
/// lock paths name the files Cyrus created.
fn check_locks(s: &Scratch, mbs: &[Mb]) {
    for m in mbs {
        s.ok("reconstruct", &["-f", &external(m.name)]);
        let lockname = paths::mailbox_lockname(m.name, Some(m.uniqueid), m.legacy).unwrap();
        let lp = paths::lock_path(&s.conf, &lockname).unwrap();
        assert!(
            lp.exists(),
            "Cyrus did not create our lock path {}",
            lp.display()
        );
        if let Some(owner) = m.owner {
            let ns = paths::lock_path(&s.conf, &paths::user_namespace_lockname(owner)).unwrap();
            assert!(ns.exists(), "no namespace lock at {}", ns.display());
        }
        let idx = paths::mailbox_meta_path(
            &s.conf,
            m.partition,
            m.name,
            Some(m.uniqueid),
            m.legacy,
            MetaFile::Index,
        )
        .unwrap();
        assert!(idx.exists(), "no index at {}", idx.display());
        let hdr = paths::mailbox_meta_path(
            &s.conf,
            m.partition,
            m.name,
            Some(m.uniqueid),
            m.legacy,
            MetaFile::Header,
        )
        .unwrap();
        assert!(hdr.exists(), "no header at {}", hdr.display());
        assert_eq!(hdr.metadata().unwrap().uid(), cyrus_ids().0);
    }
}

const ALICE: &str = "5a1b2c3d-0000-4000-8000-00000000a11c";
const BOB: &str = "6b1b2c3d-0000-4000-8000-00000000b0b0";
const BOBSENT: &str = "7c1b2c3d-0000-4000-8000-00000000b0b1";
const ERIN: &str = "e11b2c3d-0000-4000-8000-0000000000e1";

fn common() -> Vec<Mb> {
    vec![
        Mb {
            name: "user.alice",
            partition: "default",
            uniqueid: ALICE,
            legacy: false,
            owner: Some("alice"),
            inbox: Some((ALICE, false)),
        },
        Mb {
            name: "user.erin.Sub^Folder",
            partition: "p2",
            uniqueid: "f21b2c3d-0000-4000-8000-0000000000e2",
            legacy: false,
            owner: Some("erin"),
            inbox: Some((ERIN, false)),
        },
        Mb {
            name: "user.erin",
            partition: "p2",
            uniqueid: ERIN,
            legacy: false,
            owner: Some("erin"),
            inbox: Some((ERIN, false)),
        },
        Mb {
            name: "user.bob^smith",
            partition: "p2",
            uniqueid: BOB,
            legacy: true,
            owner: Some("bob.smith"),
            inbox: Some((BOB, true)),
        },
        Mb {
            name: "user.bob^smith.Sent",
            partition: "p2",
            uniqueid: BOBSENT,
            legacy: true,
            owner: Some("bob.smith"),
            inbox: Some((BOB, true)),
        },
        Mb {
            name: "DELETED.user.carol.Trash.5F3A0001",
            partition: "default",
            uniqueid: "8d1b2c3d-0000-4000-8000-00000000c0c0",
            legacy: true,
            owner: Some("carol"),
            inbox: None,
        },
        Mb {
            name: "DELETED.user.alice.Old.5F3A0002",
            partition: "default",
            uniqueid: "9e1b2c3d-0000-4000-8000-00000000a11d",
            legacy: false,
            owner: Some("alice"),
            inbox: Some((ALICE, false)),
        },
        Mb {
            name: "shared.stuff",
            partition: "default",
            uniqueid: "ab1b2c3d-0000-4000-8000-00000000b0b0",
            legacy: true,
            owner: None,
            inbox: None,
        },
        Mb {
            name: "Top",
            partition: "default",
            uniqueid: "0c1b2c3d-0000-4000-8000-00000000b0b0",
            legacy: true,
            owner: None,
            inbox: None,
        },
    ]
}

fn virtual_domain_boxes() -> Vec<Mb> {
    vec![
        Mb {
            name: "example.com!user.dave",
            partition: "default",
            uniqueid: "9b1b2c3d-0000-4000-8000-00000000d0d0",
            legacy: true,
            owner: Some("dave@example.com"),
            inbox: Some(("9b1b2c3d-0000-4000-8000-00000000d0d0", true)),
        },
        Mb {
            name: "example.com!user.dave.Sent",
            partition: "default",
            uniqueid: "9c1b2c3d-0000-4000-8000-00000000d0d1",
            legacy: true,
            owner: Some("dave@example.com"),
            inbox: Some(("9b1b2c3d-0000-4000-8000-00000000d0d0", true)),
        },
        Mb {
            name: "example.org!user.fay",
            partition: "p2",
            uniqueid: "fa1b2c3d-0000-4000-8000-00000000fafa",
            legacy: false,
            owner: Some("fay@example.org"),
            inbox: Some(("fa1b2c3d-0000-4000-8000-00000000fafa", false)),
        },
    ]
}

const META: &str = "metapartition-default: {d}/meta\nmetapartition_files: header index\n";

#[test]
fn hashed_spool_metapartition_two_partitions() {
    let s = Scratch::new("paths-hash", &format!("hashimapspool: yes\n{META}"));
    let mbs = common();
    s.create_mailboxes(&mbs);
    check(&s, &mbs, true);
    check_locks(&s, &mbs);
}

#[test]
fn plain_spool_no_hash() {
    let s = Scratch::new("paths-plain", "hashimapspool: no\n");
    let mbs = common();
    s.create_mailboxes(&mbs);
    check(&s, &mbs, false);
    check_locks(&s, &mbs);
}

#[test]
fn fulldirhash_and_virtual_domains() {
    let s = Scratch::new(
        "paths-full",
        &format!("hashimapspool: yes\nfulldirhash: yes\nvirtdomains: yes\n{META}"),
    );
    let mut mbs = common();
    mbs.extend(virtual_domain_boxes());
    s.create_mailboxes(&mbs);
    check(&s, &mbs, true);
    check_locks(&s, &mbs);
}

#[test]
fn virtual_domains_without_hashing() {
    let s = Scratch::new("paths-vd", "hashimapspool: no\nvirtdomains: userid\n");
    let mbs = virtual_domain_boxes();
    s.create_mailboxes(&mbs);
    check(&s, &mbs, false);
    check_locks(&s, &mbs);
}

#[test]
fn archive_partition() {
    let s = Scratch::new(
        "paths-arch",
        "hashimapspool: yes\narchive_enabled: yes\narchivepartition-default: {d}/archive\n",
    );
    let mbs = common();
    s.create_mailboxes(&mbs);
    check(&s, &mbs, false);
    // mbpath -a agrees, and the archive dir is under the archive partition.
    let out = s.ok("mbpath", &["-a", "user.alice"]);
    let arch =
        paths::mailbox_archive_dir(&s.conf, "default", "user.alice", Some(ALICE), false).unwrap();
    assert!(
        out.contains(&format!("Archive: {}\n", arch.display())),
        "{out}"
    );
    assert!(arch.starts_with(s.dir.join("archive")));
}
