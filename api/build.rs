//! Embeds the web app (`web/`) into the binary: writes `$OUT_DIR/web_assets.rs`, a list of
//! `(path, include_bytes!(…))` for every file the app serves. `include_bytes!` makes rustc rebuild
//! when a file changes; `rerun-if-changed` on the folder catches files added or removed.

use std::{env, fs, path::PathBuf};

#[path = "src/web_files.rs"]
mod web_files;

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("web");
    println!("cargo:rerun-if-changed={}", root.display());
    // No folder (a trimmed checkout): an app without files, which the entry page says.
    let files =
        if root.is_dir() { web_files::servable_files(&root).expect("the web folder is readable") } else { Vec::new() };
    let entries: String = files
        .iter()
        .map(|(path, absolute)| format!("    ({path:?}, include_bytes!({:?})),\n", absolute.display().to_string()))
        .collect();
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("web_assets.rs");
    fs::write(out, format!("pub static FILES: &[(&str, &[u8])] = &[\n{entries}];\n")).expect("OUT_DIR is writable");
}
