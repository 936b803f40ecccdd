//! Archive entry names the catalog's rows imply, for the cross-checks of `verify` and
//! `reindex` (a row of `user_files` names `user/<run>/...`).
#![forbid(unsafe_code)]

/// The archive entry name of a user file, as the backup writes it
/// (`archive::user_file_entry`): `seen`, `subscriptions`, `sieve/<name>`, `quota`;
/// `None` for a kind the catalog should not hold.
pub(crate) fn user_file_entry(snapshot_run: u64, kind: &str, name: &str) -> Option<String> {
    let kind = crate::model::UserFileKind::from_name(kind)?;
    crate::archive::user_file_entry(snapshot_run, kind, name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_their_entries() {
        let seen = user_file_entry(3, "seen", "").unwrap();
        assert!(
            seen.starts_with("user/") && seen.ends_with("/seen"),
            "{seen}"
        );
        let s = user_file_entry(3, "sieve", "main.script").unwrap();
        assert!(s.ends_with("/sieve/main.script"), "{s}");
        assert!(
            user_file_entry(3, "subs", "")
                .unwrap()
                .ends_with("/subscriptions")
        );
        assert_eq!(user_file_entry(3, "other", "x"), None);
    }
}
