//! Lookups and ordered walks over a twoskip file without reading all of it:
//! Cyrus's `relocate` (skiplist descent from the DUMMY, top level first) and
//! `advance_loc` (the level-0 walk).
//!
//! Pointer semantics (`_getloc`): a record of level L has L + 1 pointers and
//! sits on skiplist levels 0 .. L-1. Level 0 has two alternative pointers,
//! `ptr[0]` and `ptr[1]` (take the larger one below `current_size`); level i >= 1
//! is `ptr[i + 1]`. A DELETE record (level 0) stands in for a removed key and is
//! followed through its `ptr[0]` (`read_skipdelete`).
//!
//! Upper levels are only trusted in a clean file (DIRTY clear, no bytes past
//! `current_size`): a crashed transaction may have rewritten them in place,
//! while level 0 keeps its pre-transaction link in the other slot. So in an
//! unclean file a lookup walks level 0 from the DUMMY, which is still exact,
//! only slower (Cyrus itself would run recovery first, which needs the write
//! lock a reader must not take).
#![forbid(unsafe_code)]

use super::{
    COMMIT, DELETE, DUMMY, HEADER_SIZE, KeyValue, MAX_LEVEL, Part, RECORD, Record, Source,
    TwoskipHeader, parse_twoskip_header, read_record,
};
use crate::cyrus::ParseError;

/// The last record before a point in key order (None: the DUMMY) and the
/// first one at or after it (None: the end).
type Around = (Option<Record>, Option<Record>);

/// An open twoskip file: its header and DUMMY, and a [`Source`] to read the
/// rest on demand.
pub struct Twoskip<S: Source> {
    src: S,
    header: TwoskipHeader,
    /// `current_size`: nothing at or past it is read.
    end: u64,
    dummy: Record,
    /// Upper skiplist levels may be followed (clean file).
    fast: bool,
    /// Most records one walk may visit: every record is at least 24 bytes, so a
    /// walk that takes more steps than this has met some record twice.
    max_steps: u64,
}

impl<S: Source> Twoskip<S> {
    /// Read and check the header and the DUMMY record. `file_len` is the size of
    /// the file (or copy) behind `src`; `current_size` must not exceed it.
    pub fn open(mut src: S, file_len: u64) -> Result<Self, S::Error> {
        let header = parse_twoskip_header(src.read(0, HEADER_SIZE)?)?;
        if header.current_size > file_len {
            return Err(ParseError::truncated(
                "twoskip file",
                file_len,
                header.current_size - file_len,
                0,
            )
            .into());
        }
        let end = header.current_size;
        let dummy = read_record(&mut src, HEADER_SIZE as u64, end, Part::Whole)?;
        if dummy.kind != DUMMY || dummy.level != MAX_LEVEL {
            return Err(ParseError::invalid(
                "twoskip record",
                HEADER_SIZE as u64,
                "first record is not the DUMMY list head",
            )
            .into());
        }
        Ok(Twoskip {
            src,
            header,
            end,
            dummy,
            fast: !header.is_dirty() && header.current_size == file_len,
            max_steps: end / 24 + 1,
        })
    }

    /// The header read at open.
    pub fn header(&self) -> &TwoskipHeader {
        &self.header
    }

    /// The source the records are read from.
    pub fn source(&self) -> &S {
        &self.src
    }

    /// The value stored under exactly `key`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, S::Error> {
        let (_, found) = self.descend(&|k| k >= key)?;
        match found.filter(|r| r.key == key) {
            Some(r) => Ok(Some(self.whole(r)?.val)),
            None => Ok(None),
        }
    }

    /// The record with the greatest key (None if the file is empty).
    pub fn last(&mut self) -> Result<Option<KeyValue>, S::Error> {
        let (last, _) = self.descend(&|_| false)?;
        match last {
            Some(r) => Ok(Some(self.whole(r).map(|r| (r.key, r.val))?)),
            None => Ok(None),
        }
    }

    /// The record with the smallest key (None if the file is empty).
    pub fn first(&mut self) -> Result<Option<KeyValue>, S::Error> {
        let (_, first) = self.descend(&|_| true)?;
        match first {
            Some(r) => Ok(Some(self.whole(r).map(|r| (r.key, r.val))?)),
            None => Ok(None),
        }
    }

    /// Call `f(key, value)` for every record whose key starts with `prefix`, in
    /// key order (`f` returns false to stop early). The value of the record that
    /// ends the range is not read.
    pub fn prefix(
        &mut self,
        prefix: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<bool, S::Error>,
    ) -> Result<(), S::Error> {
        self.walk_range(prefix, |k| k.starts_with(prefix), f)
    }

    /// Call `f(key, value)` for every record from the first key >= `from` on, in
    /// key order, until `f` returns false or the file ends.
    pub fn walk_from(
        &mut self,
        from: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<bool, S::Error>,
    ) -> Result<(), S::Error> {
        self.walk_range(from, |_| true, f)
    }

    /// Call `f(key, value)` for every record from the first key >= `from` on, in
    /// key order, while `in_range(key)` holds and `f` returns true. Each record's
    /// head and key are read first; its value only if it is in range, so the
    /// record that ends a range costs its key, whatever its value's size.
    pub fn walk_range(
        &mut self,
        from: &[u8],
        mut in_range: impl FnMut(&[u8]) -> bool,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, S::Error>,
    ) -> Result<(), S::Error> {
        let (_, first) = self.descend(&|k| k >= from)?;
        let Some(mut rec) = first else {
            return Ok(());
        };
        let mut steps = 0u64;
        loop {
            if !in_range(&rec.key) {
                return Ok(());
            }
            let whole = self.whole(rec)?;
            if !f(&whole.key, &whole.val)? {
                return Ok(());
            }
            let next = whole.next0(self.end);
            if next == 0 {
                return Ok(());
            }
            let Some(n) = self.skip_deletes(next, &mut steps, Part::Key)? else {
                return Ok(());
            };
            if n.key <= whole.key {
                return Err(out_of_order(n.off).into());
            }
            rec = n;
            self.step(&mut steps, rec.off)?;
        }
    }

    /// Descend to the last record whose key does not satisfy `stop` (None: the
    /// DUMMY), and return it with its level-0 successor, the first record that
    /// does (None: the end of the file). `stop` must be monotonic in key order.
    /// Only heads and keys are read on the way down (Cyrus's `relocate` checks
    /// only the tail CRC of the record it stops at); callers read whole what
    /// they return.
    fn descend(&mut self, stop: &dyn Fn(&[u8]) -> bool) -> Result<Around, S::Error> {
        let end = self.end;
        let mut cur: Option<Record> = None;
        let mut steps = 0u64;
        // The pointer whose record was last found to stop the descent: the next
        // level down usually points at it again (Cyrus's `oldoffset`).
        let mut stopped_at = 0u64;
        if self.fast {
            for level in (1..MAX_LEVEL).rev() {
                loop {
                    let at = cur.as_ref().unwrap_or(&self.dummy);
                    let next = at.next_at(level, end);
                    if next == 0 || next == stopped_at {
                        break;
                    }
                    let Some(rec) = self.skip_deletes(next, &mut steps, Part::Key)? else {
                        break;
                    };
                    if rec.level <= level {
                        return Err(ParseError::invalid(
                            "twoskip record",
                            rec.off,
                            format!("level {} record linked on level {level}", rec.level),
                        )
                        .into());
                    }
                    if cur.as_ref().is_some_and(|c| rec.key <= c.key) {
                        return Err(out_of_order(rec.off).into());
                    }
                    if stop(&rec.key) {
                        stopped_at = next;
                        break;
                    }
                    cur = Some(rec);
                    self.step(&mut steps, next)?;
                }
            }
        }
        loop {
            let at = cur.as_ref().unwrap_or(&self.dummy);
            let next = at.next0(end);
            if next == 0 {
                return Ok((cur, None));
            }
            let Some(rec) = self.skip_deletes(next, &mut steps, Part::Key)? else {
                return Ok((cur, None));
            };
            if cur.as_ref().is_some_and(|c| rec.key <= c.key) {
                return Err(out_of_order(rec.off).into());
            }
            if stop(&rec.key) {
                return Ok((cur, Some(rec)));
            }
            cur = Some(rec);
            self.step(&mut steps, next)?;
        }
    }

    /// The record at `off`, or the first one after a chain of DELETE records
    /// (None if the chain ends the list).
    fn skip_deletes(
        &mut self,
        mut off: u64,
        steps: &mut u64,
        part: Part,
    ) -> Result<Option<Record>, S::Error> {
        loop {
            let rec = read_record(&mut self.src, off, self.end, part)?;
            match rec.kind {
                RECORD => return Ok(Some(rec)),
                // Its only pointer is the successor of the removed key.
                DELETE => {
                    off = rec.ptrs[0];
                    if off == 0 {
                        return Ok(None);
                    }
                    self.step(steps, off)?;
                }
                DUMMY | COMMIT => {
                    return Err(ParseError::invalid(
                        "twoskip record",
                        off,
                        "a DUMMY or COMMIT record inside the key chain",
                    )
                    .into());
                }
                other => {
                    return Err(ParseError::invalid(
                        "twoskip record",
                        off,
                        format!("unknown record type 0x{other:02x}"),
                    )
                    .into());
                }
            }
        }
    }

    /// The whole record of one the descent read only the key of: value read,
    /// tail CRC checked.
    fn whole(&mut self, r: Record) -> Result<Record, S::Error> {
        read_record(&mut self.src, r.off, self.end, Part::Whole)
    }

    /// Count one step; more than the file can hold records (on all levels) is a
    /// pointer cycle.
    fn step(&self, steps: &mut u64, at: u64) -> Result<(), S::Error> {
        *steps += 1;
        if *steps > self.max_steps.saturating_mul(u64::from(MAX_LEVEL) + 1) {
            return Err(ParseError::invalid(
                "twoskip file",
                at,
                "pointer cycle in the record chain",
            )
            .into());
        }
        Ok(())
    }
}

fn out_of_order(at: u64) -> ParseError {
    ParseError::invalid("twoskip record", at, "keys out of order (corrupt pointer)")
}
