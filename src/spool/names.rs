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
//! would then dereference it). We name them as a non-owner sees a mailbox outside
//! `user.*` there: under `sharedprefix` (`Shared Folders/DELETED/user/bob/Old/5F3A1B2C`).
//! The standard namespace's form (`DELETED/user/bob/...`) would collide with a
//! folder the user may create in the alternate namespace (a top-level `DELETED`),
//! and one of the two could then never be opened by name.
//!
//! A shared hierarchy's folders (owner `%shared`, see `owner.rs`) are named as an
//! admin names them, relative to the hierarchy's domain: the standard namespace
//! with the configured separator (`shared`, `shared.Announcements`,
//! `DELETED.shared.Old.5F3A1B2C`), whatever `altnamespace` says.
#![forbid(unsafe_code)]

use super::owner::Owner;
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

    /// The owner an owner id names (`bob`, `%shared`), with this server's
    /// virtual-domain and deleted-prefix settings.
    pub(crate) fn owner(&self, id: &str) -> Option<Owner> {
        Owner::parse(id, self.virtdomains, &self.deletedprefix)
    }

    /// The external name of `mb`, one of `owner`'s mailboxes, as the protocol shows
    /// it to a client backing `owner` up.
    pub(crate) fn owner_extname(&self, owner: &Owner, mb: &MbName) -> String {
        match owner {
            Owner::User { .. } => self.extname(mb),
            Owner::Shared { .. } => self.shared_extname(mb),
        }
    }

    /// A shared mailbox's name in the standard namespace, relative to its domain:
    /// `shared.Announcements`, `DELETED.shared.Old.5F3A1B2C`.
    fn shared_extname(&self, mb: &MbName) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if mb.deleted.is_some() {
            parts.push(&self.deletedprefix);
        }
        parts.extend(mb.boxes.iter().map(String::as_str));
        let mut out = String::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                out.push(self.sep);
            }
            self.push(&mut out, p);
        }
        if let Some(t) = mb.deleted {
            out.push(self.sep);
            out.push_str(&format!("{:X}", t as u32));
        }
        out
    }

    /// The internal name an external name of `owner`'s stands for: as upstream
    /// computes it for a user (`mbname_from_extname`), and for a shared hierarchy
    /// the inverse of [`Namespace::owner_extname`]. None if it cannot be parsed.
    pub(crate) fn owner_intname(&self, owner: &Owner, extname: &str) -> Option<String> {
        let domain = match owner {
            Owner::User { .. } => return self.intname(extname, &owner.id()),
            Owner::Shared { domain, .. } => domain.clone(),
        };
        let mut boxes = Vec::new();
        for c in extname.split(self.sep) {
            if c.is_empty() || c.contains('/') || (self.sep == '/' && c.contains('^')) {
                return None;
            }
            boxes.push(if self.sep == '/' {
                c.to_string()
            } else {
                c.replace('^', ".")
            });
        }
        let mb = MbName {
            domain,
            boxes,
            ..MbName::default()
        };
        Some(mb.to_internal(&self.deletedprefix))
    }

    /// The external name of `mb`, one of `userid`'s own mailboxes (INBOX, a
    /// child, or a delayed-delete copy of one), relative to `userid`.
    pub(crate) fn extname(&self, mb: &MbName) -> String {
        let sep = self.sep;
        let mut out = String::new();
        if let Some(t) = mb.deleted {
            if self.alt {
                out.push_str(&self.sharedprefix);
                out.push(sep);
            }
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
        // Under the shared prefix, where it cannot collide with a folder the user
        // made (the user's own top-level `DELETED/user/bob/Old/5F3A1B2C` is
        // `user.bob.DELETED.user.bob.Old.5F3A1B2C`).
        assert_eq!(
            n.extname(&mb("DELETED.user.bob.Old.5F3A1B2C")),
            "Shared Folders/DELETED/user/bob/Old/5F3A1B2C"
        );
        assert_eq!(
            n.intname("Shared Folders/DELETED/user/bob/Old/5F3A1B2C", "bob")
                .unwrap(),
            "DELETED.user.bob.Old.5F3A1B2C"
        );
        assert_eq!(
            n.intname("DELETED/user/bob/Old/5F3A1B2C", "bob").unwrap(),
            "user.bob.DELETED.user.bob.Old.5F3A1B2C"
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
    fn shared_hierarchies_are_named_as_an_admin_names_them() {
        for (conf, sep) in [
            ("altnamespace: yes\nunixhierarchysep: yes\n", "/"),
            ("altnamespace: no\nunixhierarchysep: no\n", "."),
        ] {
            let n = ns(conf);
            let o = n.owner("%shared").unwrap();
            for (int, ext) in [
                ("shared", "shared".to_string()),
                ("shared.News", format!("shared{sep}News")),
                (
                    "DELETED.shared.Old.5F3A1B2C",
                    format!("DELETED{sep}shared{sep}Old{sep}5F3A1B2C"),
                ),
            ] {
                assert_eq!(n.owner_extname(&o, &mb(int)), ext);
                assert_eq!(n.owner_intname(&o, &ext).unwrap(), int);
            }
        }
        let n = ns("altnamespace: no\nunixhierarchysep: no\n");
        let o = n.owner("%a.b").unwrap();
        assert_eq!(n.owner_extname(&o, &mb("a^b.c")), "a^b.c");
        assert_eq!(n.owner_intname(&o, "a^b.c").unwrap(), "a^b.c");
        let n = ns("altnamespace: no\nunixhierarchysep: no\nvirtdomains: userid\n");
        let o = n.owner("%shared@ex.org").unwrap();
        assert_eq!(
            n.owner_extname(&o, &mb("ex.org!shared.News")),
            "shared.News"
        );
        assert_eq!(
            n.owner_intname(&o, "shared.News").unwrap(),
            "ex.org!shared.News"
        );
    }

    #[test]
    fn dot_dot_names_with_slash() {
        // `INBOX/..` and `INBOX/dots/../up` are folders Cyrus accepts with `/`.
        let n = ns("altnamespace: no\nunixhierarchysep: yes\n");
        assert_eq!(n.extname(&mb("user.bob.^^")), "INBOX/..");
        assert_eq!(n.extname(&mb("user.bob.dots.^^.up")), "INBOX/dots/../up");
        assert_eq!(n.intname("INBOX/..", "bob").unwrap(), "user.bob.^^");
        assert_eq!(
            n.intname("INBOX/dots/../up", "bob").unwrap(),
            "user.bob.dots.^^.up"
        );
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
