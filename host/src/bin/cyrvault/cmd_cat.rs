//! `cyrvault cat USER GUID` / `cyrvault cat USER FOLDER UID [--at|--run]`: the raw
//! message on stdout, read by inflating the one member that holds it and checked
//! against its GUID. With `--json`, what was read (GUID, size, member), not the bytes.

use std::io::Write;
use std::process::ExitCode;

use cyrvault::cyrus::Guid;
use cyrvault_host::admin;

use crate::args::CatArgs;
use crate::cmd_ls::run_sel;
use crate::output;

pub fn run(a: &CatArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let ua = admin::find_user(&a.opts.vault, &a.user)?;
    let r = match a.uid {
        None => {
            let guid = Guid::from_hex(&a.guid_or_folder).ok_or_else(|| {
                cyrvault_host::Error::refused(format!(
                    "{:?} is not a GUID (40 hex digits); to name a message by folder, give \
                     FOLDER UID",
                    a.guid_or_folder
                ))
            })?;
            admin::cat_guid(&ua, &guid)?
        }
        Some(uid) => admin::cat(&ua, &a.guid_or_folder, uid, run_sel(&a.sel)?)?,
    };
    if a.opts.json {
        return output::io_result(output::json(&r));
    }
    let mut out = std::io::stdout().lock();
    output::io_result(out.write_all(&r.bytes).and_then(|()| out.flush()))
}
