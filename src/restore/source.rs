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

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::archive::read_entry_at;
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
        })
    }

    /// The archive's path.
    pub fn archive_path(&self) -> &Path {
        &self.archive
    }

    /// Read one entry (a folder's meta, a user file) by its location: one member,
    /// inflated up to the entry's end.
    pub fn read_entry(&mut self, loc: &EntryLoc) -> Result<Vec<u8>> {
        read_entry_at(
            &mut self.file,
            &self.archive,
            loc.member_offset,
            loc.offset_in_member,
            loc.size,
        )
    }

    /// Read one message by GUID through the catalog and check its bytes hash to it.
    pub fn read_message(&mut self, guid: &Guid) -> Result<Vec<u8>> {
        let loc = self
            .catalog
            .message_loc(guid)?
            .ok_or_else(|| Error::NotFound {
                what: "message in the archive",
                name: guid.to_hex(),
            })?;
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
                    Err(Error::NotFound {
                        what: "message in the archive",
                        name: g.to_hex(),
                    }),
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
                                    Err(Error::Other(format!(
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
                                Err(Error::Other(format!(
                                    "member {member} unreadable before this entry: {why}"
                                ))),
                            );
                            continue;
                        }
                        match read_entry_at(&mut self.file, &self.archive, member, off, size) {
                            Ok(b) => each(i, check_guid(&guids[i], &b).map(|()| b)),
                            Err(e) => {
                                broken = Some(e.to_string());
                                each(i, Err(e));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `bytes` hash to `guid`; the error names both.
pub fn check_guid(guid: &Guid, bytes: &[u8]) -> Result<()> {
    let got = Guid::of(bytes);
    if &got == guid {
        Ok(())
    } else {
        Err(Error::Other(format!(
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
