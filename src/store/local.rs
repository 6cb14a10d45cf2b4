//! A repository in a local directory. Writes go to a temporary file in the same directory, are
//! fsync'd and renamed into place, so a reader never sees a partial object.
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{ObjectInfo, ObjectStore, PutOutcome, StoreError};

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> LocalStore {
        LocalStore { root }
    }
    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

fn io_err(op: &'static str, key: &str, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound {
            key: key.to_string(),
        }
    } else if matches!(
        e.kind(),
        std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::WouldBlock
    ) {
        StoreError::Transient {
            op,
            key: key.to_string(),
            message: e.to_string(),
        }
    } else {
        StoreError::Permanent {
            op,
            key: key.to_string(),
            message: e.to_string(),
        }
    }
}

/// Repository files are private to their owner: 0700 directories, 0600 files.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Write `data` to a new private temporary file beside `path`, fsync it, then `place` it at
/// `path` (rename, or link for create-if-absent); the temporary file never outlives the call.
fn write_then<T>(
    path: &Path,
    data: &[u8],
    place: impl FnOnce(&Path, &Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().expect("keys have a parent");
    create_private_dir(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        hex::encode(rand_bytes())
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        let placed = place(&tmp, path)?;
        // Make the new name durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(placed)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

fn put_sync(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_then(path, data, |tmp, path| std::fs::rename(tmp, path))
}

/// Create-if-absent: link(2) fails with EEXIST when the key exists (atomic on every local
/// filesystem).
fn put_if_absent_sync(path: &Path, data: &[u8]) -> std::io::Result<bool> {
    write_then(path, data, |tmp, path| {
        match std::fs::hard_link(tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })
}

fn rand_bytes() -> [u8; 8] {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("OS random numbers");
    b
}

fn list_sync(root: &Path, prefix: &str) -> std::io::Result<Vec<ObjectInfo>> {
    // The prefix names a directory (`data/`) or a key prefix within one.
    let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let start = root.join(dir_part);
    let mut out = Vec::new();
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in rd {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp-") {
                continue;
            }
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .replace('\\', "/");
                if rel.starts_with(prefix) {
                    let md = entry.metadata()?;
                    out.push(ObjectInfo {
                        key: rel,
                        size: md.len(),
                        modified: md
                            .modified()
                            .ok()
                            .and_then(|t| jiff::Timestamp::try_from(t).ok()),
                    });
                }
            }
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = self.path(key);
        tokio::task::spawn_blocking(move || put_sync(&path, &data))
            .await
            .expect("put task")
            .map_err(|e| io_err("put", key, e))
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome, StoreError> {
        let path = self.path(key);
        tokio::task::spawn_blocking(move || put_if_absent_sync(&path, &data))
            .await
            .expect("put task")
            .map(|created| {
                if created {
                    PutOutcome::Created
                } else {
                    PutOutcome::Exists
                }
            })
            .map_err(|e| io_err("put", key, e))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        tokio::fs::read(self.path(key))
            .await
            .map(Bytes::from)
            .map_err(|e| io_err("get", key, e))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = tokio::fs::File::open(self.path(key))
            .await
            .map_err(|e| io_err("get", key, e))?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| io_err("get", key, e))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf)
            .await
            .map_err(|e| io_err("get", key, e))?;
        Ok(Bytes::from(buf))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let p = prefix.to_string();
        tokio::task::spawn_blocking(move || list_sync(&root, &p))
            .await
            .expect("list task")
            .map_err(|e| io_err("list", prefix, e))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete", key, e)),
        }
    }
}
