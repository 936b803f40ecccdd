//! Folder names as upstream `backupcyrusd` shows them to a client: the external
//! name of a user's mailbox relative to that user (`mbname_extname` in
//! `imap/mboxname.c`, cyrus-imapd master, with the non-admin namespace of
//! `mboxname_init_namespace(&ns, 0)`), and the way back (`mbname_from_extname`).
//!
//! Standard namespace (`altnamespace: no`): `INBOX`, `INBOX.Sent`,
//! `DELETED.user.bob.Old.5F3A1B2C`. Alternate namespace (the Cyrus 3 default):
//! `INBOX`, `Sent`, `Lists/cyrus`; a top-level folder called `INBOX` (any case
//! but exactly `INBOX` with children) or named like a namespace prefix goes under
//! `altprefix`. The hierarchy separator is `/` with `unixhierarchysep`, else `.`,
//! and a literal `.` inside a component is written `^` when the separator is `.`.
//!
//! One deliberate difference: upstream gives delayed-delete folders **no** name
//! in the alternate namespace (`mbname_extname` returns NULL and `one_status`
//! would then dereference it); we name them as the standard namespace does, with
//! the configured separator (`DELETED/user/bob/Old/5F3A1B2C`).
#![forbid(unsafe_code)]

use crate::cyrus::config::{ImapdConf, VirtDomains};
use crate::cyrus::mboxlist::MbName;

/// The namespace settings that shape external names.
#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    sep: char,
    alt: bool,
    virtdomains: bool,
    userprefix: String,
    sharedprefix: String,
    altprefix: String,
    deletedprefix: String,
}

impl Namespace {
    pub(crate) fn new(conf: &ImapdConf) -> Namespace {
        Namespace {
            sep: if conf.unixhierarchysep() { '/' } else { '.' },
            alt: conf.altnamespace(),
            virtdomains: conf.virtdomains() != VirtDomains::Off,
            userprefix: conf.get("userprefix").unwrap_or("Other Users").to_string(),
            sharedprefix: conf
                .get("sharedprefix")
                .unwrap_or("Shared Folders")
                .to_string(),
            altprefix: conf.get("altprefix").unwrap_or("Alt Folders").to_string(),
            deletedprefix: conf.deletedprefix().to_string(),
        }
    }

    /// `_append_extbuf`: a literal `.` is `^` unless the separator is `/`.
    fn push(&self, out: &mut String, component: &str) {
        if self.sep == '/' {
            out.push_str(component);
        } else {
            out.push_str(&component.replace('.', "^"));
        }
    }

    /// The user's own parts (`mbname_from_userid`): localpart and, with virtual
    /// domains, the domain after the last `@`.
    pub(crate) fn user_parts(&self, userid: &str) -> (String, Option<String>) {
        if self.virtdomains
            && let Some((lp, d)) = userid.rsplit_once('@')
        {
            return (lp.to_string(), Some(d.to_string()));
        }
        (userid.to_string(), None)
    }

    /// The external name of `mb`, one of `userid`'s own mailboxes (INBOX, a
    /// child, or a delayed-delete copy of one), relative to `userid`.
    pub(crate) fn extname(&self, mb: &MbName) -> String {
        let sep = self.sep;
        let mut out = String::new();
        if let Some(t) = mb.deleted {
            out.push_str(&self.deletedprefix);
            out.push(sep);
            out.push_str("user");
            out.push(sep);
            self.push(&mut out, mb.localpart.as_deref().unwrap_or(""));
            for b in &mb.boxes {
                out.push(sep);
                self.push(&mut out, b);
            }
            out.push(sep);
            out.push_str(&format!("{:X}", t as u32));
            return out;
        }
        let Some(top) = mb.boxes.first() else {
            return "INBOX".to_string();
        };
        if !self.alt {
            out.push_str("INBOX");
            for b in &mb.boxes {
                out.push(sep);
                self.push(&mut out, b);
            }
            return out;
        }
        let needs_alt = if top.eq_ignore_ascii_case("INBOX") {
            mb.boxes.len() == 1 || top != "INBOX"
        } else {
            *top == self.userprefix || *top == self.sharedprefix || *top == self.altprefix
        };
        if needs_alt {
            out.push_str(&self.altprefix);
            out.push(sep);
        }
        for (i, b) in mb.boxes.iter().enumerate() {
            if i > 0 {
                out.push(sep);
            }
            self.push(&mut out, b);
        }
        out
    }

    /// The internal name an external name stands for, seen by `userid`, as
    /// `mbname_from_extname` computes it (non-admin, no crossdomains). None for a
    /// name upstream cannot parse (empty, `^` with `/` as separator, ...).
    pub(crate) fn intname(&self, extname: &str, userid: &str) -> Option<String> {
        if extname.is_empty() {
            return None;
        }
        let (localpart, domain) = self.user_parts(userid);
        let mut boxes = Vec::new();
        for c in extname.split(self.sep) {
            // _array_from_extname: `^` means `.` unless the separator is `/`,
            // where it is refused; `/` inside a component is always refused.
            if c.contains('/') || (self.sep == '/' && c.contains('^')) {
                return None;
            }
            boxes.push(if self.sep == '/' {
                c.to_string()
            } else {
                c.replace('^', ".")
            });
        }
        let mut mb = MbName {
            domain,
            ..MbName::default()
        };
        let top = boxes[0].clone();
        if self.alt {
            if top == self.altprefix {
                boxes.remove(0);
                mb.localpart = Some(localpart);
            } else if top == self.userprefix {
                boxes.remove(0);
                if boxes.is_empty() {
                    return None;
                }
                mb.localpart = Some(boxes.remove(0));
            } else if top == self.sharedprefix {
                boxes.remove(0);
            } else {
                mb.localpart = Some(localpart);
                if top.eq_ignore_ascii_case("INBOX") {
                    if boxes.len() == 1 {
                        boxes.clear();
                    } else {
                        boxes[0] = top.to_ascii_uppercase();
                    }
                }
            }
        } else if top.eq_ignore_ascii_case("INBOX") {
            boxes.remove(0);
            mb.localpart = Some(localpart);
        } else if top == "user" && boxes.len() > 1 {
            boxes.remove(0);
            mb.localpart = Some(boxes.remove(0));
        }
        // Anything else is a shared name, e.g. `DELETED.user.bob.Old.5F3A1B2C`,
        // whose internal form is that of the delayed-delete mailbox.
        mb.boxes = boxes;
        if mb.localpart.is_none() && mb.boxes.is_empty() {
            return None;
        }
        Some(mb.to_internal(&self.deletedprefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cyrus::config::parse_imapd_conf;

    fn ns(extra: &str) -> Namespace {
        let c = parse_imapd_conf(&format!("configdirectory: /x\n{extra}"), "t", None).unwrap();
        Namespace::new(&c)
    }

    fn mb(int: &str) -> MbName {
        MbName::from_internal(int, "DELETED")
    }

    #[test]
    fn standard_namespace() {
        let n = ns("altnamespace: no\nunixhierarchysep: no\n");
        assert_eq!(n.extname(&mb("user.bob")), "INBOX");
        assert_eq!(n.extname(&mb("user.bob.Sent")), "INBOX.Sent");
        assert_eq!(n.extname(&mb("user.bob.Lists.a^b")), "INBOX.Lists.a^b");
        assert_eq!(
            n.extname(&mb("DELETED.user.bob.Old.5F3A1B2C")),
            "DELETED.user.bob.Old.5F3A1B2C"
        );
        for e in [
            "INBOX",
            "INBOX.Sent",
            "inbox.Lists.a^b",
            "DELETED.user.bob.Old.5F3A1B2C",
        ] {
            let i = n.intname(e, "bob").unwrap();
            assert_eq!(
                n.extname(&mb(&i)).to_lowercase(),
                e.to_lowercase(),
                "{e} -> {i}"
            );
        }
        assert_eq!(n.intname("user.carol.X", "bob").unwrap(), "user.carol.X");
        assert_eq!(n.intname("", "bob"), None);
    }

    #[test]
    fn alternate_namespace_with_slash() {
        let n = ns("altnamespace: yes\nunixhierarchysep: yes\n");
        assert_eq!(n.extname(&mb("user.bob")), "INBOX");
        assert_eq!(n.extname(&mb("user.bob.Sent")), "Sent");
        assert_eq!(n.extname(&mb("user.bob.Lists.cyrus")), "Lists/cyrus");
        assert_eq!(n.extname(&mb("user.bob.a^b")), "a.b");
        assert_eq!(n.extname(&mb("user.bob.inbox")), "Alt Folders/inbox");
        assert_eq!(n.extname(&mb("user.bob.INBOX")), "Alt Folders/INBOX");
        assert_eq!(n.extname(&mb("user.bob.INBOX.x")), "INBOX/x");
        assert_eq!(
            n.extname(&mb("user.bob.Other Users")),
            "Alt Folders/Other Users"
        );
        assert_eq!(
            n.extname(&mb("DELETED.user.bob.Old.5F3A1B2C")),
            "DELETED/user/bob/Old/5F3A1B2C"
        );
        assert_eq!(n.intname("Sent", "bob").unwrap(), "user.bob.Sent");
        assert_eq!(n.intname("inbox", "bob").unwrap(), "user.bob");
        assert_eq!(
            n.intname("Lists/cyrus", "bob").unwrap(),
            "user.bob.Lists.cyrus"
        );
        assert_eq!(n.intname("a.b", "bob").unwrap(), "user.bob.a^b");
        assert_eq!(
            n.intname("Alt Folders/inbox", "bob").unwrap(),
            "user.bob.inbox"
        );
        assert_eq!(
            n.intname("Other Users/carol/X", "bob").unwrap(),
            "user.carol.X"
        );
        assert_eq!(n.intname("a^b", "bob"), None);
    }

    #[test]
    fn virtual_domains() {
        let n = ns("altnamespace: no\nunixhierarchysep: no\nvirtdomains: userid\n");
        assert_eq!(
            n.intname("INBOX.x", "bob@ex.org").unwrap(),
            "ex.org!user.bob.x"
        );
        assert_eq!(n.extname(&mb("ex.org!user.bob.x")), "INBOX.x");
    }
}
