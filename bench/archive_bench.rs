//! Archive throughput: write a mail corpus with each compression choice, then time
//! reading single messages from a ~1 GB archive (cold page cache for the file).
//!
//! `cargo bench --bench archive_bench -- CORPUS_DIR [WORK_DIR]` where CORPUS_DIR holds
//! `.eml` files, e.g. made with
//! `python3 ../shared/corpus/gen_corpus.py --users 4 --messages-per-user 190 --seed 7 --out CORPUS_DIR`
//! (224.5 MB). Needs ~2 GB free in WORK_DIR (default /tmp/cyrvault-archive-bench).
//! Prints the markdown tables of `doc/archive-format.md`.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cyrvault::cyrus::Guid;
use cyrvault_host::archive::{
    ArchiveWriter, Lane, Level, WriterOptions, message_entry, read_entry_at,
};
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    for p in v {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "eml") {
            out.push(p);
        }
    }
}

fn drop_cache(path: &Path) {
    let f = File::open(path).unwrap();
    f.sync_all().unwrap();
    posix_fadvise(f.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
}

/// CPU seconds (user + system, all threads) used by this process so far, from
/// /proc/self/stat (clock ticks of 1/100 s). Wall time on a shared 2-core machine is
/// noisy; CPU time is what compression costs.
fn cpu_secs() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of the file are utime and stime; `after` starts at field 3.
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn write_archive(path: &Path, msgs: &[Vec<u8>], copies: usize, text: Level, binary: Level) -> f64 {
    let _ = fs::remove_file(path);
    let opts = WriterOptions {
        text_level: text,
        binary_level: binary,
        ..WriterOptions::default()
    };
    let t = Instant::now();
    let mut w = ArchiveWriter::open_with(path, opts).unwrap();
    for copy in 0..copies {
        for m in msgs {
            let name = format!(
                "{}{}",
                message_entry(&Guid::of(m)),
                if copy > 0 {
                    format!(".{copy}")
                } else {
                    String::new()
                }
            );
            w.add(&name, m, 1_700_000_000).unwrap();
        }
        w.finish_member().unwrap();
    }
    t.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // `cargo test --all-targets` runs this without a corpus (maybe with test-harness
    // options such as --test-threads): nothing to measure then.
    let Some(corpus) = args.first().map(PathBuf::from).filter(|p| p.is_dir()) else {
        println!("usage: archive_bench CORPUS_DIR [WORK_DIR] (no corpus given: nothing measured)");
        return;
    };
    let work = PathBuf::from(
        args.get(1)
            .cloned()
            .unwrap_or_else(|| "/tmp/cyrvault-archive-bench".into()),
    );
    fs::create_dir_all(&work).unwrap();
    let mut files = Vec::new();
    walk(&corpus, &mut files);
    let msgs: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
    let total: u64 = msgs.iter().map(|m| m.len() as u64).sum();
    let binary = msgs
        .iter()
        .filter(|m| cyrvault_host::archive::classify(m) == Lane::Binary);
    let binary_bytes: u64 = binary.map(|m| m.len() as u64).sum();
    println!(
        "corpus: {} messages, {:.1} MB, {:.1} % of bytes in base64-heavy messages\n",
        msgs.len(),
        total as f64 / 1e6,
        100.0 * binary_bytes as f64 / total as f64
    );
    println!(
        "| text members | binary members | write MB/s, wall (median of 3) | MB per CPU-second | archive / raw |"
    );
    println!("|---|---|---|---|---|");
    let path = work.join("w.tar.gz");
    let cases = [
        (Lane::Text.default_level(), Lane::Binary.default_level()),
        (Level::Deflate(6), Level::Deflate(6)),
        (Level::Deflate(1), Level::Deflate(1)),
        (Level::Huffman, Level::Huffman),
        (Level::Deflate(6), Level::Huffman),
    ];
    for (text, bin) in cases {
        let cpu0 = cpu_secs();
        let mut runs: Vec<f64> = (0..3)
            .map(|_| write_archive(&path, &msgs, 1, text, bin))
            .collect();
        let cpu = (cpu_secs() - cpu0) / 3.0;
        runs.sort_by(f64::total_cmp);
        let secs = runs[1]; // median of 3
        let size = fs::metadata(&path).unwrap().len();
        println!(
            "| {text:?} | {bin:?} | {:.0} | {:.0} | {:.3} |",
            total as f64 / secs / 1e6,
            total as f64 / cpu / 1e6,
            size as f64 / total as f64
        );
    }
    // A ~1 GB archive: the corpus several times over, default levels.
    let big = work.join("big.tar.gz");
    let copies = (1_450_000_000 / total.max(1)).max(1) as usize;
    let secs = write_archive(
        &big,
        &msgs,
        copies,
        Lane::Text.default_level(),
        Lane::Binary.default_level(),
    );
    let scan_t = Instant::now();
    let s = cyrvault_host::archive::scan(&big).unwrap();
    let scan_secs = scan_t.elapsed().as_secs_f64();
    let size = s.len;
    println!(
        "\nbig archive: {:.2} GB compressed, {} members, written at {:.0} MB/s, scanned (inflate+CRC+tar+SHA-1) at {:.0} MB/s of raw data",
        size as f64 / 1e9,
        s.members.len(),
        total as f64 * copies as f64 / secs / 1e6,
        total as f64 * copies as f64 / scan_secs / 1e6
    );
    // Single-message reads spread over the archive, cold file cache for each.
    let all: Vec<(u64, &cyrvault_host::archive::EntryLoc)> = s
        .members
        .iter()
        .flat_map(|m| m.entries.iter().map(move |e| (m.offset, e)))
        .filter(|(_, e)| e.name.starts_with("messages/"))
        .collect();
    let mut times = Vec::new();
    let mut warm = Vec::new();
    for i in 0..25 {
        let (off, e) = all[(i * 7919 * 131) % all.len()];
        drop_cache(&big);
        let t = Instant::now();
        let mut f = File::open(&big).unwrap();
        let b = read_entry_at(&mut f, &big, off, e.offset_in_member, e.size).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(Guid::of(&b), e.sha1);
        let t = Instant::now();
        let b = read_entry_at(&mut f, &big, off, e.offset_in_member, e.size).unwrap();
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(Guid::of(&b), e.sha1);
    }
    times.sort_by(f64::total_cmp);
    warm.sort_by(f64::total_cmp);
    println!(
        "read one message from the big archive: cold cache median {:.1} ms, max {:.1} ms; warm median {:.1} ms, max {:.1} ms (25 messages)",
        times[12], times[24], warm[12], warm[24]
    );
    let _ = fs::remove_file(&big);
    let _ = fs::remove_file(&path);
}
