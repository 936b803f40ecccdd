//! The catalog's rows read back: what every catalog query makes of rows someone
//! wrote into the SQLite file (hostile or damaged: wrong types, bad JSON, GUIDs of the
//! wrong length, negative sizes, dangling references). Each input is turned into a
//! handful of rows in every table, then every query and the canonical dump run.

use std::panic::AssertUnwindSafe;

use rusqlite::types::Value;

use cyrvault::cyrus::Guid;
use cyrvault_fuzz::Bytes;
use cyrvault_host::catalog::Catalog;

/// A column value of any SQLite type, chosen by the input.
fn val(b: &mut Bytes<'_>) -> Value {
    match b.byte() % 6 {
        0 => Value::Null,
        1 | 2 => Value::Integer(b.i64() % 4),
        3 => Value::Integer(b.i64()),
        4 => Value::Text(String::from_utf8_lossy(b.chunk()).into_owned()),
        _ => Value::Blob(b.chunk().to_vec()),
    }
}

const TABLES: [(&str, usize); 9] = [
    ("runs", 10),
    ("members", 5),
    ("messages", 5),
    ("folders", 4),
    ("folder_names", 5),
    ("folder_runs", 20),
    ("records", 13),
    ("user_files", 8),
    ("meta", 2),
];

fn main() {
    let dir = std::env::temp_dir().join(format!("cyrvault-fuzz-catalog-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("catalog.sqlite");
    let _ = std::fs::remove_file(&path);
    // persistent mode reuses them across inputs; a panic ends the process anyway
    let catalog = AssertUnwindSafe(Catalog::open(&path).expect("a fresh catalog"));
    let raw = AssertUnwindSafe(rusqlite::Connection::open(&path).expect("the same file"));
    afl::fuzz!(|data: &[u8]| {
        for (t, _) in TABLES {
            if t != "meta" {
                let _ = raw.execute(&format!("DELETE FROM {t}"), []);
            }
        }
        let mut b = Bytes::new(data);
        for _ in 0..(b.byte() % 4) {
            let (table, cols) = TABLES[usize::from(b.byte()) % TABLES.len()];
            let values: Vec<Value> = (0..cols).map(|_| val(&mut b)).collect();
            let marks = vec!["?"; cols].join(",");
            let _ = raw.execute(
                &format!("INSERT OR REPLACE INTO {table} VALUES ({marks})"),
                rusqlite::params_from_iter(values),
            );
        }
        let run = (b.byte() % 4) as u64;
        let uid = String::from_utf8_lossy(b.chunk()).into_owned();
        let mut g = [0u8; 20];
        g[0] = b.byte();
        let guid = Guid(g);
        let _ = catalog.runs();
        let _ = catalog.last_run();
        let _ = catalog.run_at(b.i64());
        let _ = catalog.folders_at(run);
        let _ = catalog.folder_by_name_at(&uid, run);
        let _ = catalog.folder_history(&uid);
        let _ = catalog.records_at(&uid, run);
        let _ = catalog.record_at(&uid, 1, run);
        let _ = catalog.has_message(&guid);
        let _ = catalog.message_loc(&guid);
        let _ = catalog.missing_guids(&[guid]);
        let _ = catalog.folder_state_last(&uid);
        let _ = catalog.folder_snapshot_at(&uid, run);
        let _ = catalog.user_files_at(run);
        let _ = catalog.messages_in_member(b.u64() % 4);
        let _ = catalog.meta_in_member(b.u64() % 4);
        let _ = catalog.dump_canonical();
        let _ = catalog.stats();
    });
}
