//! The committed C header (`include/cyrvault.h`, what Cyrus's build includes) must be
//! exactly what build.rs generates from `src/ffi/` with cbindgen, and must declare only
//! the three entry points of master/service.h.

use std::path::Path;

fn committed() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/cyrvault.h");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn committed_header_matches_generated() {
    let generated_path = env!("CYRVAULT_GENERATED_HEADER");
    let generated = std::fs::read_to_string(generated_path)
        .unwrap_or_else(|e| panic!("reading {generated_path}: {e}"));
    assert!(
        generated == committed(),
        "include/cyrvault.h is stale: copy {generated_path} over it"
    );
}

#[test]
fn header_declares_exactly_the_service_entry_points() {
    let header = committed();
    for decl in [
        "int service_init(int argc, char **argv, char **envp);",
        "int service_main(int argc, char **argv, char **envp);",
        "void service_abort(int error) __attribute__((noreturn));",
        "#ifndef CYRVAULT_H",
    ] {
        assert!(header.contains(decl), "missing {decl:?}");
    }
    // Nothing that would clash with <sysexits.h> or master/service.h, no libc headers.
    for banned in [
        "#define",
        "#include",
        "EX_",
        "MAX_USE",
        "STATUS_FD",
        "stdint",
    ] {
        let hits: Vec<&str> = header
            .lines()
            .filter(|l| l.contains(banned) && !l.starts_with("#define CYRVAULT_H"))
            .collect();
        assert!(hits.is_empty(), "unexpected {banned:?} in header: {hits:?}");
    }
    let functions = header.lines().filter(|l| l.contains("service_")).count();
    assert_eq!(functions, 3, "exactly three declarations");
}
