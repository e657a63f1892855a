//! Key files: 64 hex digits of a secret seed, the same format as a node's `node.key` (so a
//! node's key file can serve tests too). The Ed25519 key is derived from the seed as a node
//! key is ([`Identity::from_seed`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tollway_core::Identity;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("key file {path} is not valid: expected 64 hex digits")]
    Invalid { path: PathBuf },
    #[error("key file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    Exposed { path: PathBuf, mode: u32 },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> KeyFileError + 'a {
    move |source| KeyFileError::Io { op, path: path.to_owned(), source }
}

/// Read the key at `path`.
pub fn load(path: &Path) -> Result<Identity, KeyFileError> {
    let text = fs::read_to_string(path).map_err(io("reading", path))?;
    let mode = fs::metadata(path).map_err(io("reading metadata of", path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed { path: path.to_owned(), mode });
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| KeyFileError::Invalid { path: path.to_owned() })?;
    Ok(Identity::from_seed(&seed))
}

/// Read the key at `path`, or create one there (mode 0600, written atomically; the directory
/// is created with mode 0700 if missing). Returns whether it was created.
pub fn load_or_create(path: &Path) -> Result<(Identity, bool), KeyFileError> {
    match load(path) {
        Err(KeyFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io("creating directory", dir))?;
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            let tmp = dir.join(format!(
                ".{}.tmp-{}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
                std::process::id()
            ));
            let _ = fs::remove_file(&tmp);
            let mut f =
                OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io("creating", &tmp))?;
            f.write_all(format!("{}\n", hex::encode(seed)).as_bytes()).map_err(io("writing", &tmp))?;
            f.sync_all().map_err(io("syncing", &tmp))?;
            drop(f);
            // Never replace a key someone else created meanwhile: link, don't rename.
            let linked = fs::hard_link(&tmp, path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing directory", dir))?;
                    Ok((Identity::from_seed(&seed), true))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((load(path)?, false)),
                Err(e) => Err(io("creating", path)(e)),
            }
        }
        other => other.map(|id| (id, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollway-speedtest-keyfile-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_key_is_created_private_and_kept() {
        let d = tmpdir("create");
        let p = d.join("sub").join("server.key");
        let (a, created) = load_or_create(&p).unwrap();
        assert!(created);
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let (b, created) = load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(a.node_id(), b.node_id());
        // Only the key is left in the directory (no temporary file).
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_node_key_file_gives_the_node_identity() {
        let d = tmpdir("node");
        fs::create_dir_all(&d).unwrap();
        let p = d.join("node.key");
        fs::write(&p, format!("{}\n", hex::encode([3u8; 32]))).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load(&p).unwrap().node_id(), Identity::from_seed(&[3; 32]).node_id());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_or_exposed_key_files_are_errors_naming_the_file() {
        let d = tmpdir("bad");
        fs::create_dir_all(&d).unwrap();
        let p = d.join("k");
        fs::write(&p, "nothex").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("k is not valid") && e.contains("64 hex"), "{e}");
        fs::write(&p, hex::encode([1u8; 32])).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("readable by group or others") && e.contains("644"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }
}
