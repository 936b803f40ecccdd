//! The restore's side of the archive: one user's archive and catalog, opened read-only,
//! and the reads restore makes from them.
//!
//! Messages are read through the catalog's locations, never by scanning: one message
//! costs inflating the one gzip member that holds it, up to its entry. A batch of
//! messages is grouped by member and each member is inflated once, up to the last
//! entry wanted from it ([`Source::read_batch`]). Every message's bytes are checked
//! against its GUID (SHA-1): a damaged member shows up as the messages in it failing,
//! and the rest of the restore goes on.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::archive::{read_entry_at, read_member_at};
use crate::catalog::Catalog;
use crate::cyrus::Guid;
use crate::error::{Error, IoContext, Result};
use crate::model::EntryLoc;

/// One user's archive and its catalog.
pub struct Source {
    archive: PathBuf,
    file: File,
    /// The catalog (read-only use).
    pub catalog: Catalog,
    /// Entry lists of members read by [`Source::find_entry_in`], by member offset.
    members: HashMap<u64, Vec<crate::archive::EntryLoc>>,
}

/// The catalog path that goes with an archive path: `X.tar.gz` → `X.catalog.sqlite`.
pub fn catalog_path_for(archive: &Path) -> PathBuf {
    let s = archive.to_string_lossy();
    let stem = s.strip_suffix(".tar.gz").unwrap_or(&s);
    PathBuf::from(format!("{stem}.catalog.sqlite"))
}

impl Source {
    /// Open `archive` and its catalog (which must exist: restore never creates one).
    pub fn open(archive: &Path, catalog: &Path) -> Result<Source> {
        let file = File::open(archive).at("opening the archive", archive)?;
        let catalog = Catalog::open_read_only(catalog)?;
        Ok(Source {
            archive: archive.to_path_buf(),
            file,
            catalog,
            members: HashMap::new(),
        })
    }

    /// The same archive and catalog opened again (for a reader thread beside this one).
    pub fn reopen(&self) -> Result<Source> {
        let catalog = self.catalog.path().to_path_buf();
        Source::open(&self.archive, &catalog)
    }

    /// The archive's path.
    pub fn archive_path(&self) -> &Path {
        &self.archive
    }

    /// Read one entry (a folder's meta, a user file) by its location: one member,
    /// inflated up to the entry's end.
    pub fn read_entry(&mut self, loc: &EntryLoc) -> Result<Vec<u8>> {
        Ok(read_entry_at(
            &mut self.file,
            &self.archive,
            loc.member_offset,
            loc.offset_in_member,
            loc.size,
        )?)
    }

    /// Read the first `len` bytes of an entry (e.g. a `cyrus.index` header): the
    /// member is inflated only that far.
    pub fn read_entry_prefix(&mut self, loc: &EntryLoc, len: u64) -> Result<Vec<u8>> {
        Ok(read_entry_at(
            &mut self.file,
            &self.archive,
            loc.member_offset,
            loc.offset_in_member,
            loc.size.min(len),
        )?)
    }

    /// Find an entry the catalog has no location for (e.g. a folder's
    /// `mailbox_annotations.json`) by name in these members: each member's entry list
    /// is read once (the member inflated whole) and kept for later lookups.
    pub fn find_entry_in(&mut self, name: &str, members: &[u64]) -> Result<Option<EntryLoc>> {
        for &m in members {
            if !self.members.contains_key(&m) {
                let info = read_member_at(&mut self.file, &self.archive, m)?;
                self.members.insert(m, info.entries);
            }
            let found = self.members.get(&m).and_then(|entries| {
                entries.iter().find(|e| e.name == name).map(|e| EntryLoc {
                    member_offset: m,
                    offset_in_member: e.offset_in_member,
                    size: e.size,
                })
            });
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Read one message by GUID through the catalog and check its bytes hash to it.
    pub fn read_message(&mut self, guid: &Guid) -> Result<Vec<u8>> {
        let loc = self
            .catalog
            .message_loc(guid)?
            .ok_or_else(|| Error::not_found("message in the archive", guid.to_hex()))?;
        let bytes = self.read_entry(&loc)?;
        check_guid(guid, &bytes)?;
        Ok(bytes)
    }

    /// Read many messages, each member inflated once (up to the last entry wanted from
    /// it), calling `each(i, bytes)` for `guids[i]` in archive order. A message that is
    /// not in the archive, cannot be read or does not hash to its GUID gets an `Err`;
    /// the others go on. If reading a member's span fails, its messages are retried one
    /// by one, so those before the damage are still delivered.
    pub fn read_batch(
        &mut self,
        guids: &[Guid],
        mut each: impl FnMut(usize, Result<Vec<u8>>),
    ) -> Result<()> {
        // member offset -> [(offset_in_member, size, index)]
        let mut by_member: BTreeMap<u64, Vec<(u64, u64, usize)>> = BTreeMap::new();
        for (i, g) in guids.iter().enumerate() {
            match self.catalog.message_loc(g)? {
                Some(l) => by_member.entry(l.member_offset).or_default().push((
                    l.offset_in_member,
                    l.size,
                    i,
                )),
                None => each(
                    i,
                    Err(Error::not_found("message in the archive", g.to_hex())),
                ),
            }
        }
        for (member, mut wanted) in by_member {
            wanted.sort_unstable();
            let start = wanted.first().map(|w| w.0).unwrap_or(0);
            let end = wanted
                .iter()
                .map(|w| w.0.saturating_add(w.1))
                .max()
                .unwrap_or(start);
            match read_entry_at(
                &mut self.file,
                &self.archive,
                member,
                start,
                end.saturating_sub(start),
            ) {
                Ok(span) => {
                    for (off, size, i) in wanted {
                        let from = usize::try_from(off - start).ok();
                        let to = from.and_then(|f| f.checked_add(usize::try_from(size).ok()?));
                        let bytes = match (from, to) {
                            (Some(f), Some(t)) if t <= span.len() => span[f..t].to_vec(),
                            _ => {
                                each(
                                    i,
                                    Err(Error::other(format!(
                                        "entry past its span in member {member}"
                                    ))),
                                );
                                continue;
                            }
                        };
                        let r = check_guid(&guids[i], &bytes).map(|()| bytes);
                        each(i, r);
                    }
                }
                Err(_) => {
                    // One by one: entries before the damage still inflate. Once one
                    // fails to inflate, every later entry of the member would too.
                    let mut broken: Option<String> = None;
                    for (off, size, i) in wanted {
                        if let Some(why) = &broken {
                            each(
                                i,
                                Err(Error::other(format!(
                                    "member {member} unreadable before this entry: {why}"
                                ))),
                            );
                            continue;
                        }
                        match read_entry_at(&mut self.file, &self.archive, member, off, size) {
                            Ok(b) => each(i, check_guid(&guids[i], &b).map(|()| b)),
                            Err(e) => {
                                broken = Some(e.to_string());
                                each(i, Err(e.into()));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Source {
    /// `guids` in archive order (member, then offset in it); GUIDs the archive does not
    /// hold go last.
    pub fn sort_by_location(&self, guids: &mut [Guid]) -> Result<()> {
        let mut keyed = Vec::with_capacity(guids.len());
        for g in guids.iter() {
            let loc = self.catalog.message_loc(g)?;
            keyed.push((
                loc.map_or((u64::MAX, 0), |l| (l.member_offset, l.offset_in_member)),
                *g,
            ));
        }
        keyed.sort_by_key(|(k, _)| *k);
        for (slot, (_, g)) in guids.iter_mut().zip(keyed) {
            *slot = g;
        }
        Ok(())
    }

    /// Cut a list into consecutive chunks of about `bytes` (by `sizes`).
    pub fn chunks_by_size(sizes: &[u64], bytes: u64) -> Vec<std::ops::Range<usize>> {
        let mut chunks = Vec::new();
        let (mut start, mut acc) = (0, 0u64);
        for (i, s) in sizes.iter().enumerate() {
            acc = acc.saturating_add(*s);
            if acc >= bytes {
                chunks.push(start..i + 1);
                (start, acc) = (i + 1, 0);
            }
        }
        if start < sizes.len() {
            chunks.push(start..sizes.len());
        }
        chunks
    }

    /// Cut a list in archive order ([`Source::sort_by_location`]) where the member
    /// changes: each chunk is one member's messages, inflated once.
    pub fn chunks_by_member(&self, guids: &[Guid]) -> Result<Vec<std::ops::Range<usize>>> {
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut cur = None;
        for (i, g) in guids.iter().enumerate() {
            let m = self.catalog.message_loc(g)?.map(|l| l.member_offset);
            if i > 0 && m != cur {
                chunks.push(start..i);
                start = i;
            }
            cur = m;
        }
        if start < guids.len() {
            chunks.push(start..guids.len());
        }
        Ok(chunks)
    }

    /// Read `guids` on a second thread, with its own handle on the archive, while
    /// `each(i, bytes)` runs on this one, in list order: one core inflates and checks
    /// while the other side stores. Each chunk (consecutive ranges covering the list)
    /// is read with [`Source::read_batch`] (its members inflated once); two chunks are
    /// read ahead. An error from `each` stops everything and is returned.
    pub fn read_ahead(
        &self,
        guids: &[Guid],
        chunks: &[std::ops::Range<usize>],
        mut each: impl FnMut(usize, Result<Vec<u8>>) -> Result<()>,
    ) -> Result<()> {
        if guids.is_empty() {
            return Ok(());
        }
        let mut reader = self.reopen()?;
        type Chunk = (usize, Vec<Option<Result<Vec<u8>>>>);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(2);
        std::thread::scope(|scope| -> Result<()> {
            let handle = scope.spawn(move || -> Result<()> {
                for range in chunks {
                    let mut out: Vec<Option<Result<Vec<u8>>>> =
                        (0..range.len()).map(|_| None).collect();
                    reader.read_batch(&guids[range.clone()], |i, b| out[i] = Some(b))?;
                    if tx.send((range.start, out)).is_err() {
                        break; // the consumer stopped
                    }
                }
                Ok(())
            });
            let mut result = Ok(());
            'outer: for (first, msgs) in rx {
                for (k, m) in msgs.into_iter().enumerate() {
                    let b = m.unwrap_or_else(|| {
                        Err(Error::other("message not read from the archive".into()))
                    });
                    if let Err(e) = each(first + k, b) {
                        result = Err(e);
                        break 'outer;
                    }
                }
            }
            let read = handle
                .join()
                .unwrap_or_else(|_| Err(Error::other("archive reader thread panicked".into())));
            result.and(read)
        })
    }
}

/// Whether `bytes` hash to `guid`; the error names both.
pub fn check_guid(guid: &Guid, bytes: &[u8]) -> Result<()> {
    let got = Guid::of(bytes);
    if &got == guid {
        Ok(())
    } else {
        Err(Error::other(format!(
            "message {} read back from the archive hashes to {} (damaged member)",
            guid.to_hex(),
            got.to_hex()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_beside_archive() {
        assert_eq!(
            catalog_path_for(Path::new("/v/ab/Ab12.tar.gz")),
            PathBuf::from("/v/ab/Ab12.catalog.sqlite")
        );
        assert_eq!(
            catalog_path_for(Path::new("x")),
            PathBuf::from("x.catalog.sqlite")
        );
    }

    #[test]
    fn guid_check_names_both() {
        let g = Guid::of(b"hello");
        assert!(check_guid(&g, b"hello").is_ok());
        let e = check_guid(&g, b"hellO").unwrap_err().to_string();
        assert!(e.contains(&g.to_hex()) && e.contains("damaged"), "{e}");
    }
}
