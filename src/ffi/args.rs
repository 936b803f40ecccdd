//! What the C side hands us, made safe: `argc`/`argv` to `Vec<OsString>`. (The
//! descriptors a session runs on are the service's, `service::stdio`: `cyrvaultd`
//! uses them too.)

use std::ffi::{CStr, OsStr, OsString, c_char, c_int};
use std::os::unix::ffi::OsStrExt;

/// Copy a C `argv` (argc entries, NULL pointers skipped) into owned strings.
///
/// # Safety
/// `argv` is NULL or points to at least `argc` pointers, each NULL or a valid
/// NUL-terminated string, all valid for the duration of the call.
pub(crate) unsafe fn argv_to_vec(argc: c_int, argv: *const *const c_char) -> Vec<OsString> {
    let Ok(count) = usize::try_from(argc) else {
        return Vec::new();
    };
    if argv.is_null() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: the caller guarantees argv has at least argc entries.
        let ptr = unsafe { *argv.add(i) };
        if ptr.is_null() {
            break;
        }
        // SAFETY: the caller guarantees each non-NULL entry is a valid C string.
        let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
        out.push(OsStr::from_bytes(bytes).to_os_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn argv_is_copied_and_stops_at_null() {
        let a = CString::new("cyrvaultd").unwrap();
        let b = CString::new("-U").unwrap();
        let argv = [a.as_ptr(), b.as_ptr(), std::ptr::null()];
        // SAFETY: argv has 3 valid entries (the last NULL).
        let v = unsafe { argv_to_vec(3, argv.as_ptr()) };
        assert_eq!(v, vec![OsString::from("cyrvaultd"), OsString::from("-U")]);
        // SAFETY: a NULL argv is allowed.
        assert!(unsafe { argv_to_vec(2, std::ptr::null()) }.is_empty());
        // SAFETY: a negative argc reads nothing.
        assert!(unsafe { argv_to_vec(-1, argv.as_ptr()) }.is_empty());
    }
}
