//! Object storage: one small trait, a local-directory backend, an S3 backend, and a retry
//! wrapper. `layout.rs` is the only place object keys are built.
//!
//! Contract for every backend (checked by the shared conformance suite in
//! tests/store_conformance.rs):
//! - keys are `/`-separated relative paths (`data/ab/abcdef…`), never starting with `/`;
//! - `put` stores the whole value atomically: a reader sees the old value, nothing, or the whole
//!   new value, never a part; putting the same key again replaces it (the repository only does
//!   that with identical content, since its objects are content-addressed or unique);
//! - `get` of a missing key is `StoreError::NotFound`, which is permanent;
//! - `get_range` reads `len` bytes at `offset`, `NotFound` as for `get`;
//! - `list(prefix)` returns every key under the prefix with its size, once, in no particular
//!   order; it includes keys written before the call started;
//! - `put_if_absent` stores the value only when the key does not exist yet and says whether it
//!   did; two concurrent callers for one key: at most one gets `Created` (the local backend uses
//!   an atomic link, S3 `If-None-Match: *` plus a read-back, so a server that ignores the header
//!   is still detected by the loser that reads back);
//! - `list` gives each object's last-modified time *as the store's clock sees it* where the
//!   backend has one (S3 `LastModified`, file mtime); callers compare it only with other times
//!   from the same store (never with the local clock), so a skewed client clock cannot make a
//!   fresh object look old;
//! - `delete` of a missing key succeeds (idempotent);
//! - errors that may succeed when tried again (throttling, 5xx, timeouts, connection resets)
//!   are `StoreError::Transient` (or `Throttled`, with the server's Retry-After when it sent
//!   one); `RetryStore` retries only those.
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

#[cfg(feature = "faults")]
pub mod fault;
pub mod layout;
pub mod local;
pub mod retry;
pub mod s3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Last modification by the store's clock (None: the backend does not say).
    pub modified: Option<jiff::Timestamp>,
}

/// The outcome of [`ObjectStore::put_if_absent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The key existed already; nothing was written.
    Exists,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key}: not found")]
    NotFound { key: String },
    #[error("{op} {key}: {message}")]
    Transient {
        op: &'static str,
        key: String,
        message: String,
    },
    /// The store could not be reached at all (connection refused, DNS): retried only briefly
    /// (`retry::UNREACHABLE_BUDGET`), so a wrong endpoint is one quick, clear error.
    #[error("{op} {key}: {message}")]
    Unreachable {
        op: &'static str,
        key: String,
        message: String,
    },
    /// Throttling (HTTP 429/503 SlowDown): retried, honouring the server's Retry-After.
    #[error("{op} {key}: {message}")]
    Throttled {
        op: &'static str,
        key: String,
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    #[error("{op} {key}: {message}")]
    Permanent {
        op: &'static str,
        key: String,
        message: String,
    },
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Transient { .. }
                | StoreError::Throttled { .. }
                | StoreError::Unreachable { .. }
        )
    }
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            StoreError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Where this store is, for messages (no credentials).
    fn location(&self) -> String;
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;
    /// Store `data` under `key` only if nothing is stored there yet (see the module contract).
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome, StoreError>;
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError>;
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

pub type DynStore = Arc<dyn ObjectStore>;

/// A parsed repository URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUrl {
    /// `file:///abs/path` (or a plain path)
    Local(std::path::PathBuf),
    /// `s3://bucket/prefix`
    S3 { bucket: String, prefix: String },
}

impl RepoUrl {
    pub fn parse(url: &str) -> Result<RepoUrl, String> {
        if let Some(rest) = url.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(format!("{url}: file:// URL without a path"));
            }
            return Ok(RepoUrl::Local(rest.into()));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{url}: s3:// URL without a bucket"));
            }
            return Ok(RepoUrl::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(format!(
                "unsupported repository URL scheme {scheme:?} in {url:?} (use file:///path or s3://bucket/prefix)"
            ));
        }
        if url.starts_with('/') {
            return Ok(RepoUrl::Local(url.into()));
        }
        Err(format!(
            "repository URL {url:?} is neither file:///absolute/path nor s3://bucket/prefix"
        ))
    }
}

/// Options for S3 repositories (endpoint from flag/env/config; credentials from the AWS chain).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style addressing; default: on when a custom endpoint is set.
    pub path_style: Option<bool>,
}

/// Open the store a repository URL names, wrapped in retries (and, in builds with the `faults`
/// feature, in the fault injector `LIFEBOAT_FAULTS` configures).
pub async fn open(url: &RepoUrl, s3: &S3Options) -> Result<DynStore, StoreError> {
    let inner: DynStore = match url {
        RepoUrl::Local(p) => Arc::new(local::LocalStore::new(p.clone())),
        RepoUrl::S3 { bucket, prefix } => Arc::new(s3::S3Store::new(bucket, prefix, s3).await),
    };
    #[cfg(feature = "faults")]
    let inner = fault::from_env(inner);
    Ok(Arc::new(retry::RetryStore::new(inner)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls() {
        assert_eq!(
            RepoUrl::parse("file:///var/backups/x").unwrap(),
            RepoUrl::Local("/var/backups/x".into())
        );
        assert_eq!(
            RepoUrl::parse("/var/b").unwrap(),
            RepoUrl::Local("/var/b".into())
        );
        assert_eq!(
            RepoUrl::parse("s3://bucket/a/b/").unwrap(),
            RepoUrl::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            RepoUrl::parse("s3://bucket").unwrap(),
            RepoUrl::S3 {
                bucket: "bucket".into(),
                prefix: "".into()
            }
        );
        assert!(
            RepoUrl::parse("gs://bucket")
                .unwrap_err()
                .contains("unsupported")
        );
        assert!(RepoUrl::parse("s3:///x").is_err());
        assert!(RepoUrl::parse("relative/dir").is_err());
    }
}
