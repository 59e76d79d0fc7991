//! Embeds the web app (`web/`) into the binary: writes `$OUT_DIR/web_assets.rs`, a list of
//! `(path, include_bytes!(…))` for every file the app serves. `include_bytes!` makes rustc rebuild
//! when a file changes; `rerun-if-changed` on the folder catches files added or removed.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("web");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let entries: String =
        files.iter().map(|(path, absolute)| format!("    ({path:?}, include_bytes!({absolute:?})),\n")).collect();
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("web_assets.rs");
    fs::write(out, format!("pub static FILES: &[(&str, &[u8])] = &[\n{entries}];\n")).expect("OUT_DIR is writable");
}

/// Every servable file under `dir`, as (path relative to `root` with `/`, absolute path). Dot
/// files and the folder's README (documentation, not part of the app) are left out.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if !(dir == root && name == "README.md") {
            let relative = path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
            files.push((relative, path.display().to_string()));
        }
    }
}
