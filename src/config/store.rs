//! The configuration file on disk: atomic replacement (temp file, fsync, rename, directory fsync) that keeps the
//! file's mode, with timestamped backups in `LASSO_BACKUP_DIR` (mode 0700).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

const BACKUPS_KEPT: usize = 20;

/// Writes `text` to `path` atomically (temp file in the same directory, fsync, rename, directory fsync), first
/// copying the current file to `LASSO_BACKUP_DIR` (timestamped; the newest 20 kept) when that is set.
pub fn persist(path: &Path, text: &str) -> Result<(), String> {
    if let (Some(dir), true) = (super::env::process(super::env::BACKUP_DIR), path.exists()) {
        let dir = Path::new(&dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
        // Backups hold the same secrets as the file: the directory is the owner's alone.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let backup = dir.join(format!("chains-{stamp:020}.yml"));
        std::fs::copy(path, &backup)
            .map_err(|e| format!("{}: cannot back up: {e}", backup.display()))?;
        let mut backups: Vec<_> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("chains-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        backups.sort();
        while backups.len() > BACKUPS_KEPT {
            let _ = std::fs::remove_file(backups.remove(0));
        }
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("chains.yml"),
        std::process::id()
    ));
    // The new file keeps the old one's mode (a 0600 file with secrets must not become 0644).
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .ok();
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode.unwrap_or(0o600))
            .open(&tmp)?;
        if let Some(mode) = mode {
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: cannot write: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_keeps_the_file_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chains.yml");
        std::fs::write(&path, "a: 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        persist(&path, "a: 2\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a: 2\n");
    }
}
