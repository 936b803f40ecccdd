//! `cyrvault inspect index|header|cache|mailboxes PATH [--json]`.

use std::process::ExitCode;

use cyrvault::inspect;

use crate::args::{InspectArgs, InspectWhat};
use crate::output;

pub fn run(a: &InspectArgs) -> Result<ExitCode, cyrvault_host::Error> {
    match &a.what {
        InspectWhat::Index { path } => {
            let r = inspect::index(path)?;
            if a.json {
                return output::io_result(output::json(&r));
            }
            let h = &r.header;
            println!(
                "{}: version {} uidvalidity {} records {} exists {} last_uid {} highestmodseq {} generation {}",
                r.path.display(),
                h.minor_version,
                h.uidvalidity,
                h.num_records,
                h.exists,
                h.last_uid,
                h.highestmodseq,
                h.generation_no
            );
            let rows: Vec<Vec<String>> = r
                .records
                .iter()
                .map(|v| {
                    let mut flags: Vec<String> =
                        v.system_flags.iter().map(|s| s.to_string()).collect();
                    flags.extend(v.keywords.iter().cloned());
                    if v.expunged {
                        flags.push("[expunged]".into());
                    }
                    if v.unlinked {
                        flags.push("[unlinked]".into());
                    }
                    if v.archived {
                        flags.push("[archived]".into());
                    }
                    vec![
                        v.uid.to_string(),
                        v.guid.clone(),
                        v.size.to_string(),
                        v.internaldate.to_string(),
                        v.modseq.to_string(),
                        flags.join(" "),
                    ]
                })
                .collect();
            output::io_result(output::table(
                &["UID", "GUID", "SIZE", "INTERNALDATE", "MODSEQ", "FLAGS"],
                &rows,
            ))
        }
        InspectWhat::Header { path } => {
            let r = inspect::header(path)?;
            if a.json {
                return output::io_result(output::json(&r));
            }
            let h = &r.header;
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            println!("path:      {}", r.path.display());
            println!("format:    {:?}", h.format);
            println!("name:      {}", opt(&h.name));
            println!("uniqueid:  {}", opt(&h.uniqueid));
            println!("mbtype:    {}", opt(&h.mbtype));
            println!("quotaroot: {}", opt(&h.quotaroot));
            let acl: Vec<String> = h.acl.iter().map(|(i, r)| format!("{i}={r}")).collect();
            println!("acl:       {}", acl.join(" "));
            let flags: Vec<String> = h
                .user_flags
                .iter()
                .map(|f| f.clone().unwrap_or_else(|| "NIL".into()))
                .collect();
            println!("keywords:  {}", flags.join(" "));
            Ok(ExitCode::SUCCESS)
        }
        InspectWhat::Cache { path, index } => {
            let r = inspect::cache(path, index.as_deref())?;
            let bad = r.entries.iter().filter(|e| !e.crc_ok).count();
            if a.json {
                output::io_result(output::json(&r))?;
            } else {
                println!(
                    "{}: generation {} entries {} damaged {}",
                    r.path.display(),
                    r.generation,
                    r.entries.len(),
                    bad
                );
                let rows: Vec<Vec<String>> = r
                    .entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.uid.to_string(),
                            e.offset.to_string(),
                            e.len.to_string(),
                            if e.crc_ok {
                                "ok".into()
                            } else {
                                e.error.clone().unwrap_or_default()
                            },
                            e.subject.clone(),
                        ]
                    })
                    .collect();
                output::io_result(output::table(
                    &["UID", "OFFSET", "LEN", "CHECK", "SUBJECT"],
                    &rows,
                ))?;
            }
            Ok(if bad > 0 {
                ExitCode::from(cyrvault_host::error::EX_DATAERR as u8)
            } else {
                ExitCode::SUCCESS
            })
        }
        InspectWhat::Mailboxes {
            path,
            deletedprefix,
            ctl_mboxlist,
        } => {
            if *ctl_mboxlist {
                let v = inspect::mailboxes_ctl_json(path, deletedprefix)?;
                return output::io_result(output::json(&v));
            }
            let r = inspect::mailboxes(path, deletedprefix)?;
            if a.json {
                return output::io_result(output::json(&r));
            }
            println!(
                "{}: generation {} mailboxes {} users {}",
                r.path.display(),
                r.generation,
                r.mailboxes.len(),
                r.users.len()
            );
            println!("records:   {}", r.records_summary());
            let rows: Vec<Vec<String>> = r
                .mailboxes
                .iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        m.mbtype.raw().to_string(),
                        m.partition.clone().unwrap_or_else(|| "-".into()),
                        m.uniqueid.clone().unwrap_or_else(|| "-".into()),
                        m.userid.clone().unwrap_or_else(|| "-".into()),
                        if m.deleted.is_some() {
                            "deleted".into()
                        } else {
                            String::new()
                        },
                    ]
                })
                .collect();
            output::io_result(output::table(
                &["NAME", "TYPE", "PARTITION", "UNIQUEID", "USER", ""],
                &rows,
            ))
        }
    }
}
