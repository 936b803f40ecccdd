//! Generates the C header for the service entry points into `$OUT_DIR/include/cyrvault.h`.
//! The committed copy in `include/` is what Cyrus's build uses; `tests/header.rs`
//! fails when the two differ. Nothing here writes into the source tree.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let include_dir = out_dir.join("include");
    std::fs::create_dir_all(&include_dir).expect("creating $OUT_DIR/include");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("reading cbindgen.toml");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("generating the C header with cbindgen")
        .write_to_file(include_dir.join("cyrvault.h"));
    println!("cargo:include={}", include_dir.display());
    println!(
        "cargo:rustc-env=CYRVAULT_GENERATED_HEADER={}",
        include_dir.join("cyrvault.h").display()
    );
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
}
