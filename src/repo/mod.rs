//! The backup repository: content-addressed, deduplicated, compressed and encrypted, write-once.
//! The format is specified in docs/repository-format.md; this module is its only implementation.
//!
//! Everything stored is sealed with the master key (XChaCha20-Poly1305) except the key files,
//! which seal the master key with a passphrase-derived key (argon2id). Blobs (Kubernetes objects,
//! trees of object references, and later volume chunks) are named by a keyed BLAKE3 hash of
//! their plaintext, compressed with zstd (level 1), sealed, and grouped into pack files of a few MiB.
//! Index files say which blob is in which pack. A snapshot (one backup) is written last and
//! only references blobs that are already in indexed packs.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

pub mod access;
pub mod crypto;
pub mod lock;
pub mod pack;
pub mod snapshot;

use crate::store::{DynStore, StoreError, layout};
use crypto::{BlobId, KdfParams, KeyFile, MasterKey};
pub use pack::BlobType;
use pack::{PackBuilder, PackEntry};

pub const FORMAT_VERSION: u32 = 1;
/// Target pack size: a 20,000-object backup is a handful of writes.
pub const PACK_SIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("no repository at {location} (create one with `lifeboat repo init`)")]
    NotInitialized { location: String },
    #[error("a repository already exists at {location}")]
    AlreadyInitialized { location: String },
    #[error("wrong password for the repository at {location}")]
    WrongPassword { location: String },
    #[error("no password: set LIFEBOAT_PASSWORD, --password-file or --password-command")]
    NoPassword,
    #[error("the password command failed: {0}")]
    PasswordCommand(String),
    #[error("cannot read the password file {path}: {message}")]
    PasswordFile { path: String, message: String },
    #[error("{what} is corrupt or was tampered with ({key})")]
    Corrupt { what: String, key: String },
    #[error("blob {id} is not in the repository index")]
    MissingBlob { id: String },
    #[error("no backup matches {0:?} (see `lifeboat backup list`)")]
    NoSuchSnapshot(String),
    #[error("{0:?} matches more than one backup; give more characters of the id")]
    AmbiguousSnapshot(String),
    #[error("the repository is locked: {0}")]
    Locked(String),
    #[error("unsupported repository: {0}")]
    Unsupported(String),
    #[error("repository store error at {location}: {source}")]
    Store {
        location: String,
        #[source]
        source: StoreError,
    },
}

/// The repository configuration (sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub version: u32,
    pub id: String,
    pub created: String,
    /// Content-defined chunking parameters for volume data (bytes). Fixed per repository so
    /// chunks deduplicate across backups.
    pub chunker: ChunkerParams,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    pub kind: BlobType,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<PackId> {
        Some(PackId(hex::decode(s).ok()?.try_into().ok()?))
    }
}

/// An index file (sealed JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexPack {
    pub id: String,
    pub blobs: Vec<PackEntry>,
}

pub fn new_id() -> String {
    hex::encode(crypto::random::<32>())
}

pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub struct Repository {
    store: DynStore,
    key: MasterKey,
    pub config: Config,
    index: RwLock<HashMap<BlobId, Location>>,
    /// index file id -> packs it lists (for prune)
    index_files: RwLock<HashMap<String, Vec<PackId>>>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.store.location())
            .finish()
    }
}

fn store_err(store: &DynStore) -> impl Fn(StoreError) -> RepoError + '_ {
    move |source| RepoError::Store {
        location: store.location(),
        source,
    }
}

impl Repository {
    pub fn location(&self) -> String {
        self.store.location()
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// Create a repository. Fails if one exists.
    pub async fn init(
        store: DynStore,
        password: &[u8],
        kdf: KdfParams,
    ) -> Result<Repository, RepoError> {
        match store.get(layout::CONFIG).await {
            Ok(_) => {
                return Err(RepoError::AlreadyInitialized {
                    location: store.location(),
                });
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(store_err(&store)(e)),
        }
        let key = MasterKey::generate();
        let config = Config {
            version: FORMAT_VERSION,
            id: new_id(),
            created: now(),
            chunker: ChunkerParams {
                min_size: 512 * 1024,
                avg_size: 1024 * 1024,
                max_size: 8 * 1024 * 1024,
            },
        };
        let kf = KeyFile::seal(&key, password, kdf, now(), hostname())
            .map_err(|e| RepoError::Unsupported(e.to_string()))?;
        let kf_json = serde_json::to_vec_pretty(&kf).expect("serializable");
        let kid = hex::encode(&sha2_256(&kf_json)[..16]);
        store
            .put(&layout::key_file(&kid), Bytes::from(kf_json))
            .await
            .map_err(store_err(&store))?;
        // The config is written last: a repository exists once it is there.
        let sealed = key.seal(&compress_json(&config));
        store
            .put(layout::CONFIG, Bytes::from(sealed))
            .await
            .map_err(store_err(&store))?;
        Ok(Repository {
            store,
            key,
            config,
            index: RwLock::new(HashMap::new()),
            index_files: RwLock::new(HashMap::new()),
        })
    }

    /// Open a repository: find a key file the password opens, read the config, load the index.
    pub async fn open(store: DynStore, password: &[u8]) -> Result<Repository, RepoError> {
        let sealed_config = match store.get(layout::CONFIG).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::NotInitialized {
                    location: store.location(),
                });
            }
            Err(e) => return Err(store_err(&store)(e)),
        };
        let keys = store.list(layout::KEYS).await.map_err(store_err(&store))?;
        let mut master = None;
        for k in &keys {
            let raw = store.get(&k.key).await.map_err(store_err(&store))?;
            let kf: KeyFile = serde_json::from_slice(&raw).map_err(|_| RepoError::Corrupt {
                what: "key file".into(),
                key: k.key.clone(),
            })?;
            let pw = password.to_vec();
            let opened = tokio::task::spawn_blocking(move || kf.open(&pw))
                .await
                .expect("kdf task");
            match opened {
                Ok(m) => {
                    master = Some(m);
                    break;
                }
                Err(crypto::KeyError::WrongPassword) => continue,
                Err(e) => return Err(RepoError::Unsupported(e.to_string())),
            }
        }
        let Some(key) = master else {
            return Err(RepoError::WrongPassword {
                location: store.location(),
            });
        };
        let config_bytes = key
            .open(&sealed_config)
            .ok()
            .and_then(|c| zstd::stream::decode_all(&c[..]).ok())
            .ok_or_else(|| RepoError::Corrupt {
                what: "repository config".into(),
                key: layout::CONFIG.into(),
            })?;
        let config: Config =
            serde_json::from_slice(&config_bytes).map_err(|_| RepoError::Corrupt {
                what: "repository config".into(),
                key: layout::CONFIG.into(),
            })?;
        if config.version != FORMAT_VERSION {
            return Err(RepoError::Unsupported(format!(
                "format version {} (this lifeboat reads {FORMAT_VERSION})",
                config.version
            )));
        }
        let repo = Repository {
            store,
            key,
            config,
            index: RwLock::new(HashMap::new()),
            index_files: RwLock::new(HashMap::new()),
        };
        repo.load_index().await?;
        Ok(repo)
    }

    /// (Re)load every index file.
    pub async fn load_index(&self) -> Result<(), RepoError> {
        use futures::{StreamExt, TryStreamExt};
        let files = self
            .store
            .list(layout::INDEX)
            .await
            .map_err(store_err(&self.store))?;
        let loaded: Vec<(String, IndexFile)> = futures::stream::iter(files)
            .map(|f| async move {
                let idx: IndexFile = self.read_json(&f.key, "index file").await?;
                Ok::<_, RepoError>((
                    layout::id_of(layout::INDEX, &f.key)
                        .unwrap_or_default()
                        .to_string(),
                    idx,
                ))
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut index = HashMap::new();
        let mut index_files = HashMap::new();
        for (id, file) in loaded {
            let mut packs = Vec::new();
            for p in file.packs {
                let pack = PackId::from_hex(&p.id).ok_or_else(|| RepoError::Corrupt {
                    what: "index file".into(),
                    key: layout::index(&id),
                })?;
                packs.push(pack);
                for b in p.blobs {
                    index.insert(
                        b.id,
                        Location {
                            pack,
                            kind: b.kind,
                            offset: b.offset,
                            length: b.length,
                            raw_length: b.raw_length,
                        },
                    );
                }
            }
            index_files.insert(id, packs);
        }
        *self.index.write().expect("index lock") = index;
        *self.index_files.write().expect("index lock") = index_files;
        Ok(())
    }

    pub async fn index_snapshot(&self) -> HashMap<BlobId, Location> {
        self.index.read().expect("index lock").clone()
    }

    pub async fn index_files(&self) -> HashMap<String, Vec<PackId>> {
        self.index_files.read().expect("index lock").clone()
    }

    pub async fn has_blob(&self, id: &BlobId) -> bool {
        self.index.read().expect("index lock").contains_key(id)
    }

    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        self.key.blob_id(plaintext)
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        self.key.seal(plaintext)
    }

    pub fn open_sealed(&self, sealed: &[u8]) -> Result<Vec<u8>, crypto::Unauthentic> {
        self.key.open(sealed)
    }

    /// Read a sealed JSON file.
    pub async fn read_json<T: DeserializeOwned>(
        &self,
        key: &str,
        what: &str,
    ) -> Result<T, RepoError> {
        let raw = self.store.get(key).await.map_err(store_err(&self.store))?;
        let sealed = self.key.open(&raw).map_err(|_| RepoError::Corrupt {
            what: what.into(),
            key: key.into(),
        })?;
        let plain = zstd::stream::decode_all(&sealed[..]).map_err(|_| RepoError::Corrupt {
            what: what.into(),
            key: key.into(),
        })?;
        serde_json::from_slice(&plain).map_err(|_| RepoError::Corrupt {
            what: what.into(),
            key: key.into(),
        })
    }

    /// Write a sealed JSON file (zstd-compressed JSON, sealed).
    pub async fn write_json<T: Serialize>(&self, key: &str, value: &T) -> Result<u64, RepoError> {
        let sealed = self.key.seal(&compress_json(value));
        let n = sealed.len() as u64;
        self.store
            .put(key, Bytes::from(sealed))
            .await
            .map_err(store_err(&self.store))?;
        Ok(n)
    }

    pub async fn delete(&self, key: &str) -> Result<(), RepoError> {
        self.store.delete(key).await.map_err(store_err(&self.store))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectInfo>, RepoError> {
        self.store
            .list(prefix)
            .await
            .map_err(store_err(&self.store))
    }

    /// Read one blob: range-read from its pack, open, decompress, check its id.
    pub async fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>, RepoError> {
        let loc = *self
            .index
            .read()
            .expect("index lock")
            .get(id)
            .ok_or_else(|| RepoError::MissingBlob { id: id.to_hex() })?;
        let key = layout::pack(&loc.pack.to_hex());
        let sealed = self
            .store
            .get_range(&key, loc.offset as u64, loc.length as u64)
            .await
            .map_err(store_err(&self.store))?;
        self.decode_blob(id, &loc, &sealed, &key)
    }

    pub fn decode_blob(
        &self,
        id: &BlobId,
        loc: &Location,
        sealed: &[u8],
        key: &str,
    ) -> Result<Vec<u8>, RepoError> {
        let corrupt = || RepoError::Corrupt {
            what: format!("blob {}", id.to_hex()),
            key: key.to_string(),
        };
        let compressed = self.key.open(sealed).map_err(|_| corrupt())?;
        let plain = decompress_blob(&compressed, loc.raw_length as usize).map_err(|_| corrupt())?;
        if self.key.blob_id(&plain) != *id {
            return Err(corrupt());
        }
        Ok(plain)
    }

    /// Read and parse a blob as JSON.
    pub async fn read_blob_json<T: DeserializeOwned>(&self, id: &BlobId) -> Result<T, RepoError> {
        let plain = self.read_blob(id).await?;
        serde_json::from_slice(&plain).map_err(|_| RepoError::Corrupt {
            what: format!("blob {}", id.to_hex()),
            key: "(json)".into(),
        })
    }
}

thread_local! {
    // Compression contexts are expensive to create; blobs are small and many. One per thread.
    static COMPRESSOR: std::cell::RefCell<zstd::bulk::Compressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(1).expect("zstd context"));
    static DECOMPRESSOR: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("zstd context"));
}

/// zstd (level 1: blobs are small; speed matters more than the last percent) of a blob's plaintext, with this thread's reusable context.
pub fn compress_blob(plaintext: &[u8]) -> Vec<u8> {
    COMPRESSOR.with(|c| c.borrow_mut().compress(plaintext).expect("zstd compresses"))
}

/// Inverse of [`compress_blob`]; `raw_length` is the exact plaintext size.
pub fn decompress_blob(compressed: &[u8], raw_length: usize) -> std::io::Result<Vec<u8>> {
    let out = DECOMPRESSOR.with(|d| d.borrow_mut().decompress(compressed, raw_length))?;
    if out.len() != raw_length {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "length mismatch",
        ));
    }
    Ok(out)
}

/// The plaintext of a sealed JSON file: zstd-compressed JSON.
pub fn compress_json<T: Serialize>(value: &T) -> Vec<u8> {
    zstd::bulk::compress(&serde_json::to_vec(value).expect("serializable"), 3)
        .expect("zstd compresses")
}

pub fn sha2_256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Stats of a [`Packer`] session.
#[derive(Debug, Default, Clone, Copy)]
pub struct PackStats {
    pub blobs_added: u64,
    pub blobs_deduplicated: u64,
    /// Bytes uploaded for packs (sealed, compressed).
    pub pack_bytes: u64,
    pub packs: u64,
}

struct PackerState {
    /// Not counted here: see `Packer::deduplicated`.
    builder: PackBuilder,
    /// Blobs added in this session (including those not yet uploaded).
    seen: HashSet<BlobId>,
    written: Vec<IndexPack>,
    stats: PackStats,
}

/// Adds blobs to packs and uploads full packs. Safe to share between tasks. Call `finish` to
/// upload the last pack and write the index file; only then are the blobs readable.
pub struct Packer {
    repo: Arc<Repository>,
    state: Mutex<PackerState>,
    deduplicated: AtomicU64,
    pack_size: usize,
}

impl Packer {
    pub fn new(repo: Arc<Repository>) -> Packer {
        Packer::with_pack_size(repo, PACK_SIZE)
    }

    pub fn with_pack_size(repo: Arc<Repository>, pack_size: usize) -> Packer {
        Packer {
            repo,
            state: Mutex::new(PackerState {
                builder: PackBuilder::default(),
                seen: HashSet::new(),
                written: Vec::new(),
                stats: PackStats::default(),
            }),
            deduplicated: AtomicU64::new(0),
            pack_size,
        }
    }

    /// Add a blob unless the repository (or this session) already has it. Returns its id.
    pub async fn add(&self, kind: BlobType, plaintext: &[u8]) -> Result<BlobId, RepoError> {
        let id = self.repo.key.blob_id(plaintext);
        self.add_with_id(kind, id, plaintext).await
    }

    /// [`Packer::add`] for a blob whose id the caller already computed with
    /// [`Repository::blob_id`] (volume chunks are hashed where they are cut).
    pub async fn add_with_id(
        &self,
        kind: BlobType,
        id: BlobId,
        plaintext: &[u8],
    ) -> Result<BlobId, RepoError> {
        debug_assert_eq!(id, self.repo.key.blob_id(plaintext));
        if self.repo.has_blob(&id).await || self.state.lock().await.seen.contains(&id) {
            self.deduplicated.fetch_add(1, Ordering::Relaxed);
            return Ok(id);
        }
        // Compress and seal outside the lock.
        let compressed = compress_blob(plaintext);
        let sealed = self.repo.key.seal(&compressed);
        let full = {
            let mut st = self.state.lock().await;
            if !st.seen.insert(id) {
                drop(st);
                self.deduplicated.fetch_add(1, Ordering::Relaxed);
                return Ok(id);
            }
            st.builder.add(kind, id, &sealed, plaintext.len() as u32);
            st.stats.blobs_added += 1;
            if st.builder.len() >= self.pack_size {
                Some(std::mem::take(&mut st.builder))
            } else {
                None
            }
        };
        if let Some(b) = full {
            self.upload(b).await?;
        }
        Ok(id)
    }

    async fn upload(&self, builder: PackBuilder) -> Result<(), RepoError> {
        if builder.is_empty() {
            return Ok(());
        }
        let (bytes, entries) = builder.finish(&self.repo.key);
        let pid = PackId(sha2_256(&bytes));
        let size = bytes.len() as u64;
        self.repo
            .store
            .put(&layout::pack(&pid.to_hex()), Bytes::from(bytes))
            .await
            .map_err(store_err(&self.repo.store))?;
        let mut st = self.state.lock().await;
        st.written.push(IndexPack {
            id: pid.to_hex(),
            blobs: entries,
        });
        st.stats.pack_bytes += size;
        st.stats.packs += 1;
        Ok(())
    }

    /// Upload the last pack and write one index file for the packs of this session. Returns the
    /// stats, including the index bytes.
    pub async fn finish(&self) -> Result<PackStats, RepoError> {
        let last = std::mem::take(&mut self.state.lock().await.builder);
        self.upload(last).await?;
        let (written, mut stats) = {
            let mut st = self.state.lock().await;
            (std::mem::take(&mut st.written), st.stats)
        };
        stats.blobs_deduplicated = self.deduplicated.load(Ordering::Relaxed);
        if !written.is_empty() {
            let file = IndexFile { packs: written };
            let sealed = self.repo.key.seal(&compress_json(&file));
            stats.pack_bytes += sealed.len() as u64;
            let id = new_id();
            self.repo
                .store
                .put(&layout::index(&id), Bytes::from(sealed))
                .await
                .map_err(store_err(&self.repo.store))?;
            // Make the new blobs readable through this repository handle.
            let mut idx = self.repo.index.write().expect("index lock");
            let mut packs = Vec::new();
            for p in &file.packs {
                let pack = PackId::from_hex(&p.id).expect("we wrote it");
                packs.push(pack);
                for b in &p.blobs {
                    idx.insert(
                        b.id,
                        Location {
                            pack,
                            kind: b.kind,
                            offset: b.offset,
                            length: b.length,
                            raw_length: b.raw_length,
                        },
                    );
                }
            }
            drop(idx);
            self.repo
                .index_files
                .write()
                .expect("index lock")
                .insert(id, packs);
        }
        Ok(stats)
    }
}
