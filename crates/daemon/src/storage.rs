//! Files in the data directory: the secret key (created atomically, mode 0600), the
//! single-instance lock, and atomic writes for any other state file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use tollway_core::Identity;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("key file {path} is not valid: {why}")]
    BadKey { path: PathBuf, why: String },
    #[error("another tollway daemon is already using data directory {0}")]
    Locked(PathBuf),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io { op, path: path.to_owned(), source }
}

/// Create `dir` (and parents) with mode 0700 if missing.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StorageError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io("creating directory", dir))
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory (created with
/// `mode`), fsync, rename over `path`, fsync the directory. A crash leaves the old or the new
/// content, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StorageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing directory", dir))?;
    Ok(())
}

/// The node's secret seed: read from `<data_dir>/node.key`, or created there on first start.
/// Returns the identity and whether it was just created.
pub fn load_or_create_identity(data_dir: &Path) -> Result<(Identity, bool), StorageError> {
    let path = data_dir.join("node.key");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let meta = fs::metadata(&path).map_err(io("reading metadata of", &path))?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "key file is readable by group or others; fixing to 0600");
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io("chmod", &path))?;
            }
            let hexed = text.trim();
            let mut seed = [0u8; 32];
            hex::decode_to_slice(hexed, &mut seed).map_err(|e| StorageError::BadKey {
                path: path.clone(),
                why: format!("expected 64 hex digits: {e}"),
            })?;
            Ok((Identity::from_seed(&seed), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            atomic_write(&path, format!("{}\n", hex::encode(seed)).as_bytes(), 0o600)?;
            Ok((Identity::from_seed(&seed), true))
        }
        Err(e) => Err(io("reading", &path)(e)),
    }
}

/// An exclusive lock on the data directory, held for the daemon's life (released by the kernel
/// even after kill -9).
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, StorageError> {
        let path = data_dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("opening", &path))?;
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                StorageError::Locked(data_dir.to_owned())
            } else {
                io("locking", &path)(err)
            });
        }
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = load_or_create_identity(dir.path()).unwrap();
        assert!(created);
        let mode = fs::metadata(dir.path().join("node.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = load_or_create_identity(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.node_id(), b.node_id());
        assert_eq!(a.wg_public(), b.wg_public());
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("node.key")]);
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("node.key"), "not hex").unwrap();
        let err = load_or_create_identity(dir.path()).unwrap_err().to_string();
        assert!(err.contains("node.key") && err.contains("hex"), "{err}");
    }

    #[test]
    fn loose_permissions_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create_identity(dir.path()).unwrap();
        let p = dir.path().join("node.key");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create_identity(dir.path()).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn the_data_dir_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        assert!(matches!(DataDirLock::acquire(dir.path()), Err(StorageError::Locked(_))));
        drop(held);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
