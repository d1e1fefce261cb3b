//! The configuration file on disk: atomic replacement (temp file, fsync, rename, directory fsync) that keeps the
//! file's mode, with timestamped backups in `LASSO_BACKUP_DIR` (mode 0700), and the copy of the last configuration
//! that validated and ran ([`remember_good`]), which a start falls back to when the file does not validate
//! ([`fallbacks`]).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const BACKUPS_KEPT: usize = 20;
/// Name of the last good copy inside `LASSO_BACKUP_DIR` (not a `chains-*` backup: never pruned).
const LAST_GOOD_NAME: &str = "last-good.yml";

/// Where the copy of the last configuration that validated and ran is kept: `LASSO_BACKUP_DIR/last-good.yml`, or
/// `.<file name>.last-good` beside the file when no backup directory is set.
pub fn last_good_path(path: &Path) -> PathBuf {
    match super::env::process(super::env::BACKUP_DIR).filter(|d| !d.is_empty()) {
        Some(dir) => Path::new(&dir).join(LAST_GOOD_NAME),
        None => parent_of(path).join(format!(
            ".{}.last-good",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("chains.yml")
        )),
    }
}

/// Records `text` as the last configuration that validated and ran (mode 0600; nothing written when unchanged).
pub fn remember_good(path: &Path, text: &str) -> Result<(), String> {
    let target = last_good_path(path);
    if std::fs::read(&target).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    if let Some(dir) = target.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    write_atomic(&target, text, 0o600)
}

/// What a start may fall back to when the file does not validate, best first: the last good copy, then the
/// timestamped backups, newest first.
pub fn fallbacks(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![last_good_path(path)];
    if let Some(dir) = super::env::process(super::env::BACKUP_DIR).filter(|d| !d.is_empty()) {
        let mut backups = list_backups(Path::new(&dir));
        backups.reverse();
        out.extend(backups);
    }
    out.retain(|p| p.is_file());
    out
}

fn list_backups(dir: &Path) -> Vec<PathBuf> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)
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
    backups
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

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
        let mut backups = list_backups(dir);
        while backups.len() > BACKUPS_KEPT {
            let _ = std::fs::remove_file(backups.remove(0));
        }
    }
    // The new file keeps the old one's mode (a 0600 file with secrets must not become 0644).
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    write_atomic(path, text, mode)
}

/// Replaces `path` with `text` atomically (temp file in the same directory, fsync, rename, directory fsync), with
/// file mode `mode`.
fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let dir = parent_of(path);
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("chains.yml"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
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
