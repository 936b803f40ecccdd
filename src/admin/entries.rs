//! Archive entry names the catalog's rows imply, for the cross-checks of `verify` and
//! `reindex` (a row of `user_files` names `user/<run>/...`).
#![forbid(unsafe_code)]

/// The archive entry name of a user file, as the backup writes it
/// (`archive::user_entry`): `seen`, `subscriptions`, `sieve/<name>`.
pub(crate) fn user_file_entry(snapshot_run: u64, kind: &str, name: &str) -> Option<String> {
    let run = crate::archive::run_id(snapshot_run);
    match kind {
        "seen" => crate::archive::user_entry(&run, "seen", None).ok(),
        "subs" => crate::archive::user_entry(&run, "subscriptions", None).ok(),
        "sieve" => crate::archive::user_entry(&run, "sieve", Some(name)).ok(),
        _ => None,
    }
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
