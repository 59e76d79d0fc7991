//! Which files of the web folder the app serves: everything but dot files and the folder's
//! README (documentation), not following symbolic links (nothing outside the folder). Shared by
//! `build.rs`, which compiles them in, and `web.rs`'s `FASTNPC_WEB_DIR` mode, which reads them
//! per request, so both serve the same set.

use std::{
    io,
    path::{Path, PathBuf},
};

/// The servable files under `root`: (path relative to `root` with `/`, path on disk), sorted.
pub fn servable_files(root: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type()?;
            if name.starts_with('.') || kind.is_symlink() || (folder == root && name == "README.md") {
                continue;
            }
            let path = entry.path();
            if kind.is_dir() {
                folders.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
                files.push((relative, path));
            }
        }
    }
    files.sort();
    Ok(files)
}
