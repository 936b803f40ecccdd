//! `LockSet`: the locks of one mailbox, taken in Cyrus's order (user namespace,
//! mailbox name, `cyrus.index`); out-of-order requests are refused, never waited on.

use std::path::Path;

use super::{FileLock, LockError, LockMode, Locker};
use crate::cyrus::paths;

/// Locks for one mailbox, taken in Cyrus's order: user namespace → mailbox name →
/// `cyrus.index`. Asking out of order is refused with an error instead of risking
/// a deadlock with a Cyrus process that holds the namespace lock exclusively and
/// waits for the name lock (§9.7).
#[derive(Debug)]
pub struct LockSet<'a> {
    locker: &'a Locker,
    namespace: Option<FileLock>,
    name: Option<FileLock>,
    index: Option<FileLock>,
    // Set once a name lock was taken; the namespace may not be (re)taken after it
    // until the name lock is released.
    name_taken: bool,
}

impl<'a> LockSet<'a> {
    pub(super) fn new(locker: &'a Locker) -> Self {
        LockSet {
            locker,
            namespace: None,
            name: None,
            index: None,
            name_taken: false,
        }
    }

    /// Take the user namespace lock. Refused while a name or index lock is held,
    /// or when the namespace lock is already held.
    pub fn namespace(&mut self, userid: &str, mode: LockMode) -> super::Result<&FileLock> {
        let path = self
            .locker
            .user_namespace_paths(userid)?
            .into_iter()
            .next()
            .unwrap_or_default();
        if self.namespace.is_some() {
            return Err(
                LockError::order(&path, "namespace lock already held by this set".into()).into(),
            );
        }
        if self.name_taken || self.index.is_some() {
            return Err(LockError::order(
                &path,
                "lock order: the user namespace lock must be taken before any mailbox name or index lock"
                    .into(),
            )
            .into());
        }
        let l = self.locker.user_namespace(userid, mode)?;
        Ok(self.namespace.insert(l))
    }

    /// Take the mailbox name lock. Refused while an index lock or another name
    /// lock is held.
    pub fn mailbox_name(&mut self, lockname: &str, mode: LockMode) -> super::Result<&FileLock> {
        let path = paths::lock_path(&self.locker.conf, lockname)?;
        if self.name.is_some() {
            return Err(LockError::order(
                &path,
                "a mailbox name lock is already held by this set".into(),
            )
            .into());
        }
        if self.index.is_some() {
            return Err(LockError::order(
                &path,
                "lock order: the mailbox name lock must be taken before the index lock".into(),
            )
            .into());
        }
        let l = self.locker.mailbox_name(lockname, mode)?;
        self.name_taken = true;
        Ok(self.name.insert(l))
    }

    /// Take the `cyrus.index` lock.
    pub fn index(&mut self, index_path: &Path, mode: LockMode) -> super::Result<&FileLock> {
        if self.index.is_some() {
            return Err(LockError::order(
                index_path,
                "an index lock is already held by this set".into(),
            )
            .into());
        }
        let l = self.locker.index(index_path, mode)?;
        Ok(self.index.insert(l))
    }

    /// The held namespace lock.
    pub fn namespace_lock(&self) -> Option<&FileLock> {
        self.namespace.as_ref()
    }

    /// The held mailbox name lock.
    pub fn name_lock(&self) -> Option<&FileLock> {
        self.name.as_ref()
    }

    /// The held index lock.
    pub fn index_lock(&self) -> Option<&FileLock> {
        self.index.as_ref()
    }

    /// Release the index lock.
    pub fn release_index(&mut self) {
        self.index = None;
    }

    /// Release the namespace lock (Cyrus does this at every index unlock while
    /// keeping the name lock).
    pub fn release_namespace(&mut self) {
        self.namespace = None;
    }

    /// Release the name lock (and the index lock, which must not outlive it).
    pub fn release_name(&mut self) {
        self.index = None;
        self.name = None;
        self.name_taken = false;
    }

    /// Release everything, innermost first.
    pub fn release_all(&mut self) {
        self.index = None;
        self.name = None;
        self.namespace = None;
        self.name_taken = false;
    }
}

impl Drop for LockSet<'_> {
    fn drop(&mut self) {
        self.release_all();
    }
}
