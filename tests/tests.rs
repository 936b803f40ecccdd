//! Integration tests: one crate, one module per area.

mod ffi_c;
mod header;
mod master;
