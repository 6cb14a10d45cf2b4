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
pub mod keys;
pub mod lock;
pub mod pack;
pub mod snapshot;

use crate::store::{DynStore, StoreError, layout};
use crypto::{BlobId, KdfParams, KeyFile, MasterKey};
pub use pack::BlobType;
use pack::{PackBuilder, PackEntry};

/// Version 2 binds every sealed file to its object key (authenticated data) and authenticates
/// key-file metadata; version 1 repositories are still read and written in their own format.
pub const FORMAT_VERSION: u32 = 2;
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
    #[error("no key {0:?} in this repository (see `lifeboat repo key list`)")]
    KeyNotFound(String),
    #[error("{0:?} matches more than one key; give more characters of the id")]
    KeyAmbiguous(String),
    #[error(
        "key {0} is the one this password opened: it is not removed (remove it with another key's password, or replace it with `lifeboat repo key passwd`)"
    )]
    KeyInUse(String),
    #[error(
        "the key this password opened ({0}) was removed by another process meanwhile: nothing removed (this password no longer opens the repository)"
    )]
    KeyGone(String),
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
    #[error(
        "this operation lost its repository lock ({0}); it stopped before writing, nothing it wrote is referenced"
    )]
    LockLost(String),
    #[error("an earlier write of this backup failed ({0}); the backup was not recorded")]
    WriteFailed(String),
    #[error(
        "refusing to record the backup: {missing} blob(s) it references are not in the repository (e.g. {example}); nothing was recorded"
    )]
    Unreferenced { missing: usize, example: String },
    #[error(
        "the repository has damaged files ({0}); run `lifeboat repo check`, then `lifeboat repo repair index|snapshots`"
    )]
    Damaged(String),
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
    crate::faults::now().to_string()
}

/// A repository file that could not be read (named, with why), found while loading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedFile {
    pub key: String,
    pub message: String,
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
    /// Seal files bound to their keys (format version 2).
    bind_names: bool,
    /// Index files that could not be read at the last load.
    damaged_index: RwLock<Vec<DamagedFile>>,
    /// Key files that could not be parsed at open.
    pub damaged_keys: Vec<DamagedFile>,
    /// The id of the key file the password opened (`keys/<id>`).
    key_id: String,
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

    /// Create a repository. Fails if one exists, also when another `init` (or a first backup)
    /// creates it at the same moment: the config is written with create-if-absent, and the
    /// loser removes its key file.
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
        crate::faults::point("init.after-key");
        // The config is written last, and only if absent: a repository exists once it is there,
        // and it has exactly one config, sealed with the key of the init that won.
        let sealed = key.seal_bound(&compress_json(&config), layout::CONFIG.as_bytes());
        let outcome = store
            .put_if_absent(layout::CONFIG, Bytes::from(sealed))
            .await
            .map_err(store_err(&store));
        match outcome {
            Ok(crate::store::PutOutcome::Created) => {}
            Ok(crate::store::PutOutcome::Exists) => {
                let _ = store.delete(&layout::key_file(&kid)).await;
                return Err(RepoError::AlreadyInitialized {
                    location: store.location(),
                });
            }
            Err(e) => {
                // Unknown whether the config landed: leave the key (open picks the key that
                // opens the config, so an unused key file is harmless; `repo check` lists it).
                return Err(e);
            }
        }
        Ok(Repository {
            store,
            key,
            config,
            index: RwLock::new(HashMap::new()),
            index_files: RwLock::new(HashMap::new()),
            bind_names: true,
            damaged_index: RwLock::new(Vec::new()),
            damaged_keys: Vec::new(),
            key_id: kid,
        })
    }

    /// Open a repository: the key is one that the password opens *and* that opens the config
    /// (an init that died between its key file and the config, or lost a race, leaves a key that
    /// opens with the password but not the config); then load the index.
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
        let mut found = None;
        let mut damaged_keys = Vec::new();
        let mut opened_any = false;
        let mut unsupported = None;
        for k in &keys {
            let raw = store.get(&k.key).await.map_err(store_err(&store))?;
            // A key file is named by the hash of its content: a changed byte is damage, not a
            // wrong password.
            let named = layout::id_of(layout::KEYS, &k.key)
                .is_some_and(|id| id == hex::encode(&sha2_256(&raw)[..16]));
            if !named {
                damaged_keys.push(DamagedFile {
                    key: k.key.clone(),
                    message: "key file content does not match its name (corrupt or tampered)"
                        .into(),
                });
                continue;
            }
            let kf: KeyFile = match serde_json::from_slice(&raw) {
                Ok(kf) => kf,
                Err(e) => {
                    damaged_keys.push(DamagedFile {
                        key: k.key.clone(),
                        message: format!("not a key file: {e}"),
                    });
                    continue;
                }
            };
            let pw = password.to_vec();
            let opened = tokio::task::spawn_blocking(move || kf.open(&pw))
                .await
                .expect("kdf task");
            match opened {
                Ok(m) => {
                    opened_any = true;
                    if let Some(c) = open_config(&m, &sealed_config) {
                        let id = layout::id_of(layout::KEYS, &k.key).unwrap_or_default();
                        found = Some((m, c, id.to_string()));
                        break;
                    }
                }
                Err(crypto::KeyError::WrongPassword) => continue,
                Err(e) => {
                    damaged_keys.push(DamagedFile {
                        key: k.key.clone(),
                        message: e.to_string(),
                    });
                    unsupported = Some(e.to_string());
                }
            }
        }
        let Some((key, (config, bind_names), key_id)) = found else {
            if opened_any {
                return Err(RepoError::Corrupt {
                    what: "repository config (no key that the password opens decrypts it)".into(),
                    key: layout::CONFIG.into(),
                });
            }
            if unsupported.is_none() && !damaged_keys.is_empty() {
                return Err(RepoError::Corrupt {
                    what: format!(
                        "key file ({}; no other key opens with this password)",
                        damaged_keys[0].message
                    ),
                    key: damaged_keys[0].key.clone(),
                });
            }
            if let (Some(u), true) = (unsupported, !damaged_keys.is_empty()) {
                return Err(RepoError::Unsupported(format!(
                    "{u} ({})",
                    damaged_keys[0].key
                )));
            }
            return Err(RepoError::WrongPassword {
                location: store.location(),
            });
        };
        if !(1..=FORMAT_VERSION).contains(&config.version) {
            return Err(RepoError::Unsupported(format!(
                "format version {} (this lifeboat reads 1 to {FORMAT_VERSION})",
                config.version
            )));
        }
        let repo = Repository {
            store,
            key,
            config,
            index: RwLock::new(HashMap::new()),
            index_files: RwLock::new(HashMap::new()),
            bind_names,
            damaged_index: RwLock::new(Vec::new()),
            damaged_keys,
            key_id,
        };
        repo.load_index().await?;
        Ok(repo)
    }

    /// (Re)load every index file.
    pub async fn load_index(&self) -> Result<(), RepoError> {
        self.load_index_with(None).await
    }

    /// Every pack in the store with its size (one LIST of `data/`).
    pub async fn pack_sizes(&self) -> Result<HashMap<String, u64>, RepoError> {
        Ok(self
            .list(layout::DATA)
            .await?
            .into_iter()
            .filter_map(|o| Some((layout::id_of(layout::DATA, &o.key)?.to_string(), o.size)))
            .collect())
    }

    /// Load the index keeping only locations whose pack exists and is long enough (one LIST
    /// of `data/`). Writers use this: deduplicating against a blob whose pack is missing or
    /// truncated would make a new backup reference lost data; with it, such blobs are simply
    /// stored again. Where two index files place a blob, a valid location wins.
    pub async fn load_index_valid(&self) -> Result<(), RepoError> {
        let packs: HashMap<String, u64> = self.pack_sizes().await?;
        self.load_index_with(Some(&packs)).await
    }

    async fn load_index_with(&self, valid: Option<&HashMap<String, u64>>) -> Result<(), RepoError> {
        use futures::{StreamExt, TryStreamExt};
        let files = self
            .store
            .list(layout::INDEX)
            .await
            .map_err(store_err(&self.store))?;
        // A damaged index file does not stop the others from loading: it is recorded (see
        // `damaged_index`); what only it listed reads as missing, and prune refuses to run.
        let loaded: Vec<(String, Result<IndexFile, RepoError>)> = futures::stream::iter(files)
            .map(|f| async move {
                let idx = self.read_json::<IndexFile>(&f.key, "index file").await;
                if let Err(RepoError::Store { source, .. }) = &idx {
                    if !source.is_not_found() {
                        return Err(idx.expect_err("checked"));
                    }
                }
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
        let mut damaged = Vec::new();
        'files: for (id, file) in loaded {
            let file = match file {
                Ok(f) => f,
                Err(RepoError::Store { .. }) => continue, // removed meanwhile (prune)
                Err(e) => {
                    damaged.push(DamagedFile {
                        key: layout::index(&id),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let mut packs = Vec::new();
            for p in &file.packs {
                match PackId::from_hex(&p.id) {
                    Some(pack) => packs.push(pack),
                    None => {
                        damaged.push(DamagedFile {
                            key: layout::index(&id),
                            message: format!("invalid pack id {:?}", p.id),
                        });
                        continue 'files;
                    }
                }
            }
            for (p, pack) in file.packs.into_iter().zip(packs.iter().copied()) {
                let size = valid.map(|v| v.get(&p.id).copied());
                for b in p.blobs {
                    if let Some(size) = size {
                        let fits = size.is_some_and(|s| b.offset as u64 + b.length as u64 <= s);
                        if !fits {
                            continue;
                        }
                    } else if index.contains_key(&b.id) {
                        continue; // the first location read is kept
                    }
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
        if !damaged.is_empty() {
            tracing::warn!(files = ?damaged, "damaged index files skipped");
        }
        *self.index.write().expect("index lock") = index;
        *self.index_files.write().expect("index lock") = index_files;
        *self.damaged_index.write().expect("index lock") = damaged;
        Ok(())
    }

    /// Index files the last load could not read.
    pub fn damaged_index(&self) -> Vec<DamagedFile> {
        self.damaged_index.read().expect("index lock").clone()
    }

    pub fn binds_names(&self) -> bool {
        self.bind_names
    }

    fn seal_for(&self, key: &str, plaintext: &[u8]) -> Vec<u8> {
        if self.bind_names {
            self.key.seal_bound(plaintext, key.as_bytes())
        } else {
            self.key.seal(plaintext)
        }
    }

    fn open_for(&self, key: &str, sealed: &[u8]) -> Result<Vec<u8>, crypto::Unauthentic> {
        if self.bind_names {
            self.key.open_bound(sealed, key.as_bytes())
        } else {
            self.key.open(sealed)
        }
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
        self.decode_json(key, what, &raw)
    }

    /// Open and parse a sealed JSON file's bytes (as read from `key`).
    pub fn decode_json<T: DeserializeOwned>(
        &self,
        key: &str,
        what: &str,
        raw: &[u8],
    ) -> Result<T, RepoError> {
        let sealed = self.open_for(key, raw).map_err(|_| RepoError::Corrupt {
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
        let sealed = self.seal_for(key, &compress_json(value));
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

/// The config under the version-2 binding, else as version 1.
fn open_config(key: &MasterKey, sealed: &[u8]) -> Option<(Config, bool)> {
    let decode = |plain: Vec<u8>| -> Option<Config> {
        let bytes = zstd::stream::decode_all(&plain[..]).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    if let Ok(p) = key.open_bound(sealed, layout::CONFIG.as_bytes()) {
        let c = decode(p)?;
        return (c.version >= 2).then_some((c, true));
    }
    let c = decode(key.open(sealed).ok()?)?;
    (c.version == 1).then_some((c, false))
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
    /// Set when an upload failed: the blobs of that pack are gone, so nothing this session
    /// returned can be trusted any more, and every later call fails.
    poisoned: Option<String>,
    /// Every blob id this session returned (new or deduplicated): what a snapshot built from
    /// this session may reference, checked by [`Repository::check_references`].
    referenced: HashSet<BlobId>,
}

/// Adds blobs to packs and uploads full packs. Safe to share between tasks. Call `finish` to
/// upload the last pack and write the index file; only then are the blobs readable.
///
/// A failed upload poisons the packer: the blob ids it had acknowledged for that pack were
/// lost, so every later `add` and `finish` fails too, and a backup using it cannot record a
/// snapshot.
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
                poisoned: None,
                referenced: HashSet::new(),
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

    fn poisoned(st: &PackerState) -> Result<(), RepoError> {
        match &st.poisoned {
            Some(why) => Err(RepoError::WriteFailed(why.clone())),
            None => Ok(()),
        }
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
        {
            let mut st = self.state.lock().await;
            Self::poisoned(&st)?;
            st.referenced.insert(id);
            if self.repo.has_blob(&id).await || st.seen.contains(&id) {
                self.deduplicated.fetch_add(1, Ordering::Relaxed);
                return Ok(id);
            }
        }
        // Compress and seal outside the lock.
        let compressed = compress_blob(plaintext);
        let sealed = self.repo.key.seal(&compressed);
        let full = {
            let mut st = self.state.lock().await;
            Self::poisoned(&st)?;
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
        crate::faults::point("pack.before-upload");
        let put = self
            .repo
            .store
            .put(&layout::pack(&pid.to_hex()), Bytes::from(bytes))
            .await
            .map_err(store_err(&self.repo.store));
        let mut st = self.state.lock().await;
        if let Err(e) = put {
            st.poisoned
                .get_or_insert_with(|| crate::error::display_chain(&e));
            return Err(e);
        }
        st.written.push(IndexPack {
            id: pid.to_hex(),
            blobs: entries,
        });
        st.stats.pack_bytes += size;
        st.stats.packs += 1;
        Ok(())
    }

    /// Every blob id this packer returned.
    pub async fn referenced(&self) -> Vec<BlobId> {
        self.state.lock().await.referenced.iter().copied().collect()
    }

    /// Upload the last pack and write one index file for the packs of this session. Returns the
    /// stats, including the index bytes. `lock`, when given, must still be held before the
    /// index is written.
    pub async fn finish(&self) -> Result<PackStats, RepoError> {
        self.finish_locked(None).await
    }

    pub async fn finish_locked(&self, lock: Option<&lock::Lock>) -> Result<PackStats, RepoError> {
        let last = {
            let mut st = self.state.lock().await;
            Self::poisoned(&st)?;
            std::mem::take(&mut st.builder)
        };
        self.upload(last).await?;
        let (written, mut stats) = {
            let mut st = self.state.lock().await;
            Self::poisoned(&st)?;
            (std::mem::take(&mut st.written), st.stats)
        };
        stats.blobs_deduplicated = self.deduplicated.load(Ordering::Relaxed);
        if !written.is_empty() {
            if let Some(l) = lock {
                l.ensure_held().await?;
            }
            crate::faults::point("index.before-write");
            let file = IndexFile { packs: written };
            let id = new_id();
            let key = layout::index(&id);
            let sealed = self.repo.seal_for(&key, &compress_json(&file));
            stats.pack_bytes += sealed.len() as u64;
            let put = self
                .repo
                .store
                .put(&key, Bytes::from(sealed))
                .await
                .map_err(store_err(&self.repo.store));
            if let Err(e) = put {
                self.state
                    .lock()
                    .await
                    .poisoned
                    .get_or_insert_with(|| crate::error::display_chain(&e));
                return Err(e);
            }
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

impl Repository {
    /// Check, against the index as it is in the store *now* and the packs that exist now, that
    /// every blob in `blobs` is readable. A backup calls this last, before its snapshot.
    pub async fn check_references(
        &self,
        blobs: impl IntoIterator<Item = BlobId>,
    ) -> Result<(), RepoError> {
        self.load_index_valid().await?;
        let packs: HashMap<String, u64> = self.pack_sizes().await?;
        let index = self.index.read().expect("index lock");
        let mut missing = 0usize;
        let mut example = String::new();
        for b in blobs {
            // Indexed, and its pack exists and is long enough to hold it.
            let ok = index.get(&b).is_some_and(|l| {
                packs
                    .get(&l.pack.to_hex())
                    .is_some_and(|&size| l.offset as u64 + l.length as u64 <= size)
            });
            if !ok {
                if missing == 0 {
                    example = b.to_hex();
                }
                missing += 1;
            }
        }
        if missing > 0 {
            return Err(RepoError::Unreferenced { missing, example });
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "faults"))]
mod tests {
    use super::*;
    use crate::store::fault::{FaultStore, parse};

    const FAST: KdfParams = KdfParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    /// A failed pack upload must not leave its blobs "seen": adding the same content again
    /// fails (the packer is poisoned) instead of deduplicating into nothing.
    #[tokio::test]
    async fn a_failed_upload_poisons_the_packer() {
        let dir = tempfile::tempdir().unwrap();
        let local: DynStore = Arc::new(crate::store::local::LocalStore::new(dir.path().into()));
        Repository::init(local.clone(), b"pw", FAST).await.unwrap();
        let faulty: DynStore = Arc::new(FaultStore::new(
            local.clone(),
            parse("put@data/,fail=permanent").unwrap(),
            1,
            None,
        ));
        let repo = Arc::new(Repository::open(faulty, b"pw").await.unwrap());
        let packer = Packer::with_pack_size(repo.clone(), 10);
        // The pack fills at once and its upload fails.
        assert!(packer.add(BlobType::Object, b"first object").await.is_err());
        // The same content again: not "already seen", an error.
        let again = packer.add(BlobType::Object, b"first object").await;
        assert!(matches!(again, Err(RepoError::WriteFailed(_))), "{again:?}");
        assert!(packer.add(BlobType::Object, b"other").await.is_err());
        assert!(packer.finish().await.is_err(), "nothing can be finished");
        assert!(
            repo.list(layout::INDEX).await.unwrap().is_empty(),
            "no index written"
        );
    }

    /// Two inits at once on one store: one wins, the other says so and removes its key; the
    /// repository opens with the winner's key. A key left by an init that died before its
    /// config does not stop `open`.
    #[tokio::test]
    async fn concurrent_inits_and_orphan_keys() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let store: DynStore = Arc::new(crate::store::local::LocalStore::new(dir.path().into()));
            let (a, b) = tokio::join!(
                Repository::init(store.clone(), b"pw", FAST),
                Repository::init(store.clone(), b"pw", FAST)
            );
            assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1);
            assert_eq!(store.list(layout::KEYS).await.unwrap().len(), 1);
            let winner = a.or(b).unwrap();
            // An orphan key (an init that died between key and config) with the same password.
            let orphan =
                KeyFile::seal(&MasterKey::generate(), b"pw", FAST, now(), hostname()).unwrap();
            store
                .put(
                    "keys/0000orphan",
                    Bytes::from(serde_json::to_vec(&orphan).unwrap()),
                )
                .await
                .unwrap();
            let opened = Repository::open(store.clone(), b"pw").await.unwrap();
            assert_eq!(opened.config.id, winner.config.id);
        }
    }
}
