//! `cyrvaultd`: the lock-and-stream service Cyrus's master starts (a SERVICES entry in
//! cyrus.conf). All the work is in the library (`cyrvault::service::master`); this only
//! hands argv over and exits with the status it returns.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = cyrvault::service::master::run(args);
    cyrvault::service::stdio::abort_process(code)
}
