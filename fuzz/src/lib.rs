//! What the fuzz targets share: a small in-memory spool for the service side of the
//! protocol, and a reader that cuts fuzz input into typed pieces.

use std::path::{Path, PathBuf};

use cyrvault::Result;
use cyrvault::protocol::FileStat;
use cyrvault::service::session::{PartitionMap, Want};
use cyrvault::service::{
    Fetch, Folder, FolderEntry, FolderOpen, MetaFile, OpenFile, Spool, UserFile,
};

/// Takes typed values off the front of the input; past the end everything is zero.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn u64(&mut self) -> u64 {
        let mut v = [0u8; 8];
        for b in &mut v {
            *b = self.byte();
        }
        u64::from_le_bytes(v)
    }
    pub fn i64(&mut self) -> i64 {
        self.u64() as i64
    }
    /// A length-prefixed (one byte) slice.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte()).min(self.data.len());
        let (c, rest) = self.data.split_at(n);
        self.data = rest;
        c
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// One user (`bob`) with two folders and a few files: enough for every command to
/// reach the code that sends data.
pub struct MemSpool;

const MSG: &[u8] = b"Subject: x\r\n\r\nbody\r\n";

fn stat(len: usize, ino: u64) -> FileStat {
    FileStat {
        size: len as u64,
        mtime: 1_700_000_000,
        ino,
    }
}

fn open(bytes: &'static [u8], ino: u64) -> Fetch<'static> {
    Fetch::Open(OpenFile {
        stat: stat(bytes.len(), ino),
        reader: Box::new(bytes),
    })
}

struct MemFolder;

impl Folder for MemFolder {
    fn uniqueid(&self) -> &[u8] {
        b"u-inbox"
    }
    fn jmapid(&self) -> &[u8] {
        b""
    }
    fn meta_stat(&self, file: MetaFile) -> Option<FileStat> {
        (file != MetaFile::Annotations).then(|| stat(3, 11))
    }
    fn open_meta(&self, file: MetaFile) -> Fetch<'_> {
        match file {
            MetaFile::Annotations => Fetch::Missing,
            _ => open(b"HDR", 11),
        }
    }
    fn mailbox_annotations(&self) -> Result<Option<Vec<u8>>> {
        Ok(Some(b"[]".to_vec()))
    }
    fn message_file(&self, uid: u32) -> Option<PathBuf> {
        (uid < 3).then(|| PathBuf::from(format!("{uid}.")))
    }
    fn unlock_index(&mut self) {}
    fn open_message(&self, _path: &Path) -> Fetch<'_> {
        open(MSG, 100)
    }
}

impl Spool for MemSpool {
    fn users(&self) -> Result<Vec<Vec<u8>>> {
        Ok(vec![b"bob".to_vec()])
    }
    fn user_file_stat(&self, _user: &[u8], which: UserFile) -> Result<Option<FileStat>> {
        Ok((which == UserFile::Seen).then(|| stat(4, 1)))
    }
    fn open_user_file(&self, _user: &[u8], which: UserFile) -> Result<Fetch<'_>> {
        Ok(match which {
            UserFile::Seen => open(b"seen", 1),
            UserFile::Sub => Fetch::OpenFailed,
            // Synthetic like the real spool's: the user's quota roots (doc/protocol.md 2.10).
            UserFile::Quota => open(b"user.bob %(S (1024 2048) M (3 100))\n", 2),
        })
    }
    fn folders(&self, user: &[u8]) -> Result<Vec<FolderEntry>> {
        if user != b"bob" {
            return Ok(Vec::new());
        }
        Ok(vec![FolderEntry {
            name: b"INBOX".to_vec(),
            uniqueid: b"u-inbox".to_vec(),
            jmapid: Vec::new(),
            header: Some(stat(3, 11)),
            index: Some(stat(3, 12)),
            annotations: None,
            mailbox_annotations: None,
            deleted: None,
        }])
    }
    fn open_folder(&self, user: &[u8], folder: &[u8], _want: Want<'_>) -> Result<FolderOpen<'_>> {
        if user == b"bob" && folder == b"INBOX" {
            Ok(FolderOpen::Open(Box::new(MemFolder)))
        } else {
            Ok(FolderOpen::Missing {
                intname: [b"user.", user, b".", folder].concat(),
            })
        }
    }
    fn sieve_scripts(&self, _user: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![b"main.script".to_vec()])
    }
    fn open_sieve(&self, _user: &[u8], _name: &[u8]) -> Result<Fetch<'_>> {
        Ok(open(b"keep;", 50))
    }
    fn partitions(&self) -> Result<PartitionMap> {
        Ok(PartitionMap {
            partitions: vec![(b"p1".to_vec(), b"/srv/p1".to_vec(), 2049)],
            users: vec![(b"bob".to_vec(), b"p1".to_vec())],
        })
    }
}
