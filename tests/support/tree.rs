//! Copies a fixture tree into a temp dir, keeping symlinks as links (sysfs' `class/` links, e.g.
//! hwmon, resolve again because they are relative). Included by the node fixture tests with
//! `#[path]`, so they need none of the servers in `support`.
use std::path::Path;

pub fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &dest).unwrap();
        } else if kind.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}
