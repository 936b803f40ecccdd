//! Mailbox metadata and quota commands: `SETMETADATA`/`GETMETADATA` (RFC 5464: special
//! use, comments, every mailbox annotation) and `SETQUOTA`/`GETQUOTAROOT` (RFC 2087),
//! plus `MYRIGHTS` (RFC 4314).
#![forbid(unsafe_code)]

use super::parse::Value;
use super::{Arg, Client, Result};

/// One quota root's resources: (name, usage, limit).
pub type QuotaResources = Vec<(String, u64, u64)>;

impl Client {
    /// `SETMETADATA mailbox (entry value)`; `None` removes the entry. `entry` is the
    /// full name (`/private/specialuse`, `/shared/comment`).
    pub fn setmetadata(&mut self, mailbox: &str, entry: &str, value: Option<&[u8]>) -> Result<()> {
        let open = format!("({entry}");
        let mut args = vec![
            Arg::Atom("SETMETADATA"),
            Arg::Str(mailbox.as_bytes()),
            Arg::Atom(&open),
        ];
        match value {
            Some(v) => args.push(Arg::Str(v)),
            None => args.push(Arg::Atom("NIL")),
        }
        args.push(Arg::Glued(")"));
        self.run(&args).map(drop)
    }

    /// `GETMETADATA mailbox (entries...)`: the entries that have a value.
    pub fn getmetadata(
        &mut self,
        mailbox: &str,
        entries: &[&str],
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let list = format!("({})", entries.join(" "));
        let reply = self.run(&[
            Arg::Atom("GETMETADATA"),
            Arg::Str(mailbox.as_bytes()),
            Arg::Atom(&list),
        ])?;
        let mut out = Vec::new();
        for v in reply.data("METADATA") {
            let Some(items) = v.get(2).and_then(Value::as_list) else {
                continue;
            };
            for pair in items.chunks(2) {
                if let [k, val] = pair
                    && let (Some(k), Some(val)) = (k.as_text(), val.as_bytes())
                {
                    out.push((k, val.to_vec()));
                }
            }
        }
        Ok(out)
    }

    /// `SETQUOTA root (resource limit ...)` (admins only).
    pub fn setquota(&mut self, root: &str, limits: &[(&str, i64)]) -> Result<()> {
        let list: Vec<String> = limits.iter().map(|(r, l)| format!("{r} {l}")).collect();
        let list = format!("({})", list.join(" "));
        self.run(&[
            Arg::Atom("SETQUOTA"),
            Arg::Str(root.as_bytes()),
            Arg::Atom(&list),
        ])
        .map(drop)
    }

    /// `GETQUOTAROOT mailbox`: each root with its resources.
    pub fn getquotaroot(&mut self, mailbox: &str) -> Result<Vec<(String, QuotaResources)>> {
        let reply = self.run(&[Arg::Atom("GETQUOTAROOT"), Arg::Str(mailbox.as_bytes())])?;
        let mut out = Vec::new();
        for v in reply.data("QUOTA") {
            let (Some(root), Some(items)) = (
                v.get(1).and_then(Value::as_text),
                v.get(2).and_then(Value::as_list),
            ) else {
                continue;
            };
            let mut res = Vec::new();
            for t in items.chunks(3) {
                if let [n, u, l] = t
                    && let (Some(n), Some(u), Some(l)) = (n.as_text(), u.as_u64(), l.as_u64())
                {
                    res.push((n.to_ascii_uppercase(), u, l));
                }
            }
            out.push((root, res));
        }
        Ok(out)
    }

    /// `MYRIGHTS mailbox`.
    pub fn myrights(&mut self, mailbox: &str) -> Result<String> {
        let reply = self.run(&[Arg::Atom("MYRIGHTS"), Arg::Str(mailbox.as_bytes())])?;
        Ok(reply
            .data("MYRIGHTS")
            .find_map(|v| v.get(2).and_then(Value::as_text))
            .unwrap_or_default())
    }
}
