//! The archive reader: gzip members (CRC, ISIZE), the tar entries inside, resync
//! after damage, one-member and one-entry reads at offsets, entry names, and the
//! run manifests stored in entries.

use std::io::Cursor;
use std::path::Path;

use cyrvault_host::archive::{Members, parse_entry_name, read_entry_at, read_member_at};
use cyrvault_host::model::parse_manifest;

fn main() {
    let path = Path::new("fuzz.tar.gz");
    afl::fuzz!(|data: &[u8]| {
        let mut members = Members::at(Cursor::new(data), 0, path);
        let mut rounds = 0;
        loop {
            rounds += 1;
            if rounds > 64 {
                break;
            }
            match members.next() {
                None => break,
                Some(Ok(m)) => {
                    for e in &m.entries {
                        let _ = parse_entry_name(&e.name);
                        if let Ok(bytes) = read_entry_at(
                            &mut Cursor::new(data),
                            path,
                            m.offset,
                            e.offset_in_member,
                            e.size.min(1 << 20),
                        ) {
                            let _ = parse_manifest(&bytes);
                        }
                    }
                }
                Some(Err(_)) => match members.resync(Cursor::new(data)) {
                    Ok(Some(_)) => {}
                    _ => break,
                },
            }
        }
        let at = data.len() as u64 / 3;
        let _ = read_member_at(&mut Cursor::new(data), path, at);
        let _ = parse_manifest(data);
    });
}
