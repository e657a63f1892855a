//! The operator API server: JSON lines on a unix socket (see `tollway_api`). The socket is mode
//! 0600 in a 0700 directory: only root can connect, and that is checked by the kernel before a
//! single byte is read.

use crate::readers::Readers;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tollway_api::{Reply, Request, MAX_REQUEST};

/// Most API connections served at once.
const MAX_CLIENTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("another daemon is serving the API at {0}")]
    InUse(PathBuf),
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}

/// Bind the socket (replacing a stale one left by a crash) and serve until the driver is gone.
pub fn serve(path: &Path, readers: Readers) -> Result<(), ApiError> {
    let io = |op: &'static str| move |source| ApiError::Io { op, path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        crate::storage::ensure_private_dir(dir).map_err(|e| ApiError::Io {
            op: "creating the directory of",
            path: path.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ApiError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io("removing stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(io("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io("chmod"))?;
    tracing::info!(path = %path.display(), "operator API listening");
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!("too many API clients; connection refused");
                continue;
            };
            let readers = readers.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = client(stream, readers).await {
                    tracing::debug!(error = %e, "API client ended");
                }
            });
        }
    });
    Ok(())
}

async fn client(stream: UnixStream, readers: Readers) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader.take(u64::MAX));
    loop {
        let mut line = Vec::new();
        reader.get_mut().set_limit(MAX_REQUEST as u64 + 1);
        let n = reader.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(());
        }
        let reply = if line.len() > MAX_REQUEST {
            Reply { ok: false, result: None, error: Some(format!("request longer than {MAX_REQUEST} bytes")) }
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Err(e) => Reply { ok: false, result: None, error: Some(format!("bad request: {e}")) },
                Ok(req) => readers.answer(req).await,
            }
        };
        let mut out = serde_json::to_vec(&reply).expect("replies serialize");
        out.push(b'\n');
        writer.write_all(&out).await?;
        if line.len() > MAX_REQUEST {
            return Ok(());
        }
    }
}
