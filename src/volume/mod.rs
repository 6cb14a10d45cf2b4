//! Volume data in the repository (docs/repository-format.md, "Volume data"): a tar stream goes in,
//! each file's content is cut into content-defined chunks (FastCDC with the repository's chunker
//! parameters), every chunk is deduplicated, compressed and sealed into the same packs as the
//! manifests, and the volume's file tree (path, type, mode, owner, size, mtime, symlink target,
//! chunk list, content hash) is stored as `tree` blobs. A stored tree is turned back into a tar
//! stream for restores.
//!
//! Where the tar stream comes from (a mover pod, a local directory) is not this module's business:
//! it reads any `AsyncRead` and writes any `AsyncWrite`.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::repo::crypto::BlobId;
use crate::repo::pack::BlobType;
use crate::repo::{Packer, RepoError, Repository};

pub mod mover;
pub mod snapshots;

/// Entries per tree blob (an unchanged part of a volume yields identical trees).
const TREE_ENTRIES: usize = 1000;

/// Pack size for volume data: larger than for manifests (fewer, larger writes; chunks are up to
/// 8 MiB anyway).
pub const PACK_SIZE: usize = 16 << 20;

/// A piece of a file's content: a range of a shared buffer (no copy per chunk).
struct Piece {
    buf: Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
}

impl Piece {
    fn whole(v: Vec<u8>) -> Piece {
        let len = v.len();
        Piece {
            buf: Arc::new(v),
            range: 0..len,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("reading the tar stream: {0}")]
    Tar(std::io::Error),
    #[error("writing the tar stream: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("the data pipeline stopped: {0}")]
    Pipeline(String),
    /// The stream ended before tar's end-of-archive marker: the transfer was cut short (the API
    /// server's exec streams can end early without an error: kubernetes/kubernetes#124571).
    #[error("the tar stream ended before its end-of-archive marker ({0})")]
    Truncated(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    /// A hard link to an earlier entry (`target`).
    Hardlink,
}

/// One file, directory or link of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Relative path, `/`-separated, no leading `./`.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<BlobId>,
    /// BLAKE3 of the content (files only), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeBlob {
    pub entries: Vec<FileEntry>,
}

/// What an ingest read and stored.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub chunks: u64,
}

/// Counters a progress display can poll while an ingest or a restore runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes: AtomicU64,
    pub files: AtomicU64,
}

fn clean_path(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_end_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// Read a tar stream and store its files' contents as chunks through `packer`. Returns the
/// file tree (in tar order). `workers` chunks are compressed and sealed at the same time.
pub async fn ingest_tar<R>(
    repo: Arc<Repository>,
    packer: Arc<Packer>,
    reader: R,
    workers: usize,
    counters: Arc<Counters>,
) -> Result<(Vec<FileEntry>, IngestStats), VolumeError>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (bridge, _stop_reader_on_drop) = blocking_reader(reader);
    ingest(repo, packer, bridge, workers, counters).await
}

/// A synchronous reader over `reader`, made on the blocking thread by the returned closure,
/// and a guard. Dropping the guard (the async caller was cancelled: Ctrl-C) makes the reader
/// fail at once, so the blocking thread ends instead of waiting for data that will never come
/// (and keeping the runtime, hence the process, from shutting down).
fn blocking_reader<R>(
    reader: R,
) -> (
    impl FnOnce() -> std::io::BufReader<tokio_util::io::SyncIoBridge<UntilCancelled<R>>>,
    tokio_util::sync::DropGuard,
)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let token = tokio_util::sync::CancellationToken::new();
    let reader = UntilCancelled {
        inner: reader,
        cancelled: Box::pin(token.clone().cancelled_owned()),
    };
    let handle = tokio::runtime::Handle::current();
    let make = move || {
        let _guard = handle.enter();
        // Few, large reads through the bridge: tar reads headers 512 bytes at a time.
        std::io::BufReader::with_capacity(1 << 20, tokio_util::io::SyncIoBridge::new(reader))
    };
    (make, token.drop_guard())
}

/// An [`AsyncRead`] that fails once its token is cancelled.
pub struct UntilCancelled<R> {
    inner: R,
    cancelled: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for UntilCancelled<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        if self.cancelled.as_mut().poll(cx).is_ready() {
            // Not ErrorKind::Interrupted: readers retry that.
            return std::task::Poll::Ready(Err(std::io::Error::other("cancelled")));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// [`ingest_tar`] for a synchronous reader (a local file, stdin), built on the blocking thread
/// by `make_reader`.
pub async fn ingest<F, R>(
    repo: Arc<Repository>,
    packer: Arc<Packer>,
    make_reader: F,
    workers: usize,
    counters: Arc<Counters>,
) -> Result<(Vec<FileEntry>, IngestStats), VolumeError>
where
    F: FnOnce() -> R + Send + 'static,
    R: std::io::Read,
{
    let chunker = repo.config.chunker;
    pipeline(packer, workers, move |tx| {
        let input = make_reader();
        read_tar(input, chunker, &tx, &counters)
    })
    .await
}

/// Store a raw byte stream (a dump hook's stdout) as one file entry named `name`: cut into
/// content-defined chunks, deduplicated, compressed and sealed like volume files.
pub async fn ingest_stream<R>(
    repo: Arc<Repository>,
    packer: Arc<Packer>,
    reader: R,
    name: &str,
    workers: usize,
    counters: Arc<Counters>,
) -> Result<(FileEntry, IngestStats), VolumeError>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (make, _stop_reader_on_drop) = blocking_reader(reader);
    let chunker = repo.config.chunker;
    let name = name.to_string();
    let (mut entries, stats) = pipeline(packer, workers, move |tx| {
        let mut input = make();
        let mut fe = FileEntry {
            path: name,
            kind: EntryType::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: crate::faults::now().as_second().max(0) as u64,
            target: None,
            chunks: vec![],
            hash: None,
        };
        let mut stats = IngestStats::default();
        let mut slots = Vec::new();
        let mut hasher = blake3::Hasher::new();
        let cdc = fastcdc::v2020::StreamCDC::new(
            &mut input,
            chunker.min_size as usize,
            chunker.avg_size as usize,
            chunker.max_size as usize,
        );
        for chunk in cdc {
            let chunk = chunk.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(e) => VolumeError::Tar(e),
                other => VolumeError::Pipeline(other.to_string()),
            })?;
            hasher.update(&chunk.data);
            let len = chunk.data.len() as u64;
            fe.size += len;
            counters.bytes.fetch_add(len, Ordering::Relaxed);
            let slot = Slot::default();
            slots.push(slot.clone());
            stats.chunks += 1;
            tx.blocking_send((slot, Piece::whole(chunk.data)))
                .map_err(|_| VolumeError::Pipeline("the packing workers stopped".into()))?;
        }
        fe.hash = Some(hasher.finalize().to_hex().to_string());
        stats.files = 1;
        stats.bytes = fe.size;
        Ok((vec![(fe, slots)], stats))
    })
    .await?;
    Ok((entries.pop().expect("one entry"), stats))
}

/// Stream one stored file's content (a dump) into `w`, `prefetch` chunks ahead; its size and
/// BLAKE3 hash are checked against the entry before `w` is shut down (a mismatch is an error,
/// and the reader sees the stream end short of what it was told to expect).
pub async fn write_file<W>(
    repo: Arc<Repository>,
    entry: &FileEntry,
    mut w: W,
    prefetch: usize,
) -> Result<u64, VolumeError>
where
    W: AsyncWrite + Unpin,
{
    use futures::StreamExt;
    let mut chunks = futures::stream::iter(entry.chunks.iter().copied().map(|id| {
        let repo = repo.clone();
        async move { repo.read_blob(&id).await }
    }))
    .buffered(prefetch.max(1));
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    while let Some(data) = chunks.next().await {
        let data = data.map_err(|err| {
            VolumeError::Pipeline(format!(
                "{}: a chunk of it cannot be read from the repository: {}",
                entry.path,
                crate::error::display_chain(&err)
            ))
        })?;
        hasher.update(&data);
        written += data.len() as u64;
        if written > entry.size {
            break;
        }
        w.write_all(&data).await.map_err(VolumeError::Write)?;
    }
    let hash = hasher.finalize().to_hex().to_string();
    if written != entry.size || entry.hash.as_deref().is_some_and(|h| h != hash) {
        return Err(VolumeError::Pipeline(format!(
            "{}: the stored chunks do not make the recorded content ({written} of {} bytes, hash {})",
            entry.path,
            entry.size,
            if entry.hash.as_deref() == Some(hash.as_str()) {
                "equal"
            } else {
                "different"
            }
        )));
    }
    w.flush().await.map_err(VolumeError::Write)?;
    w.shutdown().await.map_err(VolumeError::Write)?;
    Ok(written)
}

/// Run `produce` on a blocking thread (it reads, cuts and hashes: synchronous work) while
/// `workers` tasks compute chunk ids, compress, seal and pack what it sends. Returns the
/// produced entries with their chunk ids filled in.
async fn pipeline<P>(
    packer: Arc<Packer>,
    workers: usize,
    produce: P,
) -> Result<(Vec<FileEntry>, IngestStats), VolumeError>
where
    P: FnOnce(
            tokio::sync::mpsc::Sender<(Slot, Piece)>,
        ) -> Result<(Vec<Pending>, IngestStats), VolumeError>
        + Send
        + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<(Slot, Piece)>(workers.max(1) * 2);
    let producer = tokio::task::spawn_blocking(move || produce(tx));
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut pool = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let rx = rx.clone();
        let packer = packer.clone();
        pool.spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some((slot, data)) = next else {
                    return Ok::<(), RepoError>(());
                };
                let id = packer.add(BlobType::Chunk, data.bytes()).await?;
                let _ = slot.set(id);
            }
        });
    }
    let mut first_err: Option<VolumeError> = None;
    while let Some(r) = pool.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(VolumeError::Repo(e));
                // Stop the reader: it sees the channel closed.
                rx.lock().await.close();
            }
            Err(e) => {
                first_err.get_or_insert(VolumeError::Pipeline(e.to_string()));
                rx.lock().await.close();
            }
        }
    }
    let produced = producer
        .await
        .map_err(|e| VolumeError::Pipeline(e.to_string()))?;
    if let Some(e) = first_err {
        return Err(e);
    }
    let (files, stats) = produced?;
    // Every worker has finished: every slot is filled.
    let entries = files
        .into_iter()
        .map(|(mut e, slots)| {
            e.chunks = slots
                .iter()
                .map(|s| *s.get().expect("a worker filled every slot"))
                .collect();
            e
        })
        .collect();
    Ok((entries, stats))
}

/// Where a worker puts the id of the chunk it packed.
type Slot = Arc<std::sync::OnceLock<BlobId>>;

type Pending = (FileEntry, Vec<Slot>);

fn read_tar(
    input: impl std::io::Read,
    chunker: crate::repo::ChunkerParams,
    tx: &tokio::sync::mpsc::Sender<(Slot, Piece)>,
    counters: &Counters,
) -> Result<(Vec<Pending>, IngestStats), VolumeError> {
    let mut out = Vec::new();
    let mut stats = IngestStats::default();
    for_each_entry(input, |mut entry| {
        let Some(mut fe) = entry_meta(&entry)? else {
            return Ok(());
        };
        let kind = fe.kind;
        let mut slots = Vec::new();
        if kind == EntryType::File {
            let mut hasher = blake3::Hasher::new();
            let mut send = |data: Piece, fe: &mut FileEntry| -> Result<(), VolumeError> {
                let len = data.range.len() as u64;
                fe.size += len;
                counters.bytes.fetch_add(len, Ordering::Relaxed);
                let slot = Slot::default();
                slots.push(slot.clone());
                stats.chunks += 1;
                tx.blocking_send((slot, data))
                    .map_err(|_| VolumeError::Pipeline("the packing workers stopped".into()))
            };
            let size = entry.header().size().map_err(VolumeError::Tar)?;
            let (min, avg, max) = (
                chunker.min_size as usize,
                chunker.avg_size as usize,
                chunker.max_size as usize,
            );
            if size <= 2 * max as u64 {
                // Most files: read whole, cut in memory (no per-file chunker buffer).
                let mut buf = Vec::with_capacity(size as usize);
                std::io::Read::read_to_end(&mut entry, &mut buf).map_err(VolumeError::Tar)?;
                hasher.update(&buf);
                if buf.len() <= min {
                    if !buf.is_empty() {
                        send(Piece::whole(buf), &mut fe)?;
                    }
                } else {
                    let cuts: Vec<(usize, usize)> =
                        fastcdc::v2020::FastCDC::new(&buf, min, avg, max)
                            .map(|c| (c.offset, c.length))
                            .collect();
                    let buf = Arc::new(buf);
                    for (off, len) in cuts {
                        let piece = Piece {
                            buf: buf.clone(),
                            range: off..off + len,
                        };
                        send(piece, &mut fe)?;
                    }
                }
            } else {
                let cdc = fastcdc::v2020::StreamCDC::new(&mut entry, min, avg, max);
                for chunk in cdc {
                    let chunk = chunk.map_err(|e| match e {
                        fastcdc::v2020::Error::IoError(e) => VolumeError::Tar(e),
                        other => VolumeError::Pipeline(other.to_string()),
                    })?;
                    hasher.update(&chunk.data);
                    send(Piece::whole(chunk.data), &mut fe)?;
                }
            }
            drop(send);
            fe.hash = Some(hasher.finalize().to_hex().to_string());
            stats.files += 1;
            stats.bytes += fe.size;
        } else if kind == EntryType::Dir {
            stats.dirs += 1;
        }
        counters.files.fetch_add(1, Ordering::Relaxed);
        out.push((fe, slots));
        Ok(())
    })?;
    Ok((out, stats))
}

/// Reads `inner`, remembering whether it reached its end.
struct EofTracking<R> {
    inner: R,
    eof: bool,
}

impl<R: std::io::Read> std::io::Read for EofTracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        Ok(n)
    }
}

/// Call `f` for each entry of the tar stream `input`. A stream that ends without the
/// end-of-archive marker (two zero blocks) is [`VolumeError::Truncated`], even at an entry
/// boundary, where the tar crate alone would report a clean end. After the marker the rest of
/// the stream (record padding) is read, so the writer can finish.
fn for_each_entry<R: std::io::Read>(
    input: R,
    mut f: impl FnMut(tar::Entry<'_, EofTracking<R>>) -> Result<(), VolumeError>,
) -> Result<(), VolumeError> {
    let mut archive = tar::Archive::new(EofTracking {
        inner: input,
        eof: false,
    });
    let result: Result<(), VolumeError> = (|| {
        for entry in archive.entries().map_err(VolumeError::Tar)? {
            f(entry.map_err(VolumeError::Tar)?)?;
        }
        Ok(())
    })();
    let mut rest = archive.into_inner();
    if rest.eof {
        return Err(VolumeError::Truncated(match result {
            Err(e) => e.to_string(),
            Ok(()) => "it stopped at an entry boundary".into(),
        }));
    }
    result?;
    std::io::copy(&mut rest.inner, &mut std::io::sink()).map_err(VolumeError::Tar)?;
    Ok(())
}

/// A tar entry's metadata as a [`FileEntry`] (size 0, no content yet), or `None` for what is not
/// kept: devices, FIFOs, sockets, PAX/GNU metadata entries and the volume root itself.
fn entry_meta<R: std::io::Read>(entry: &tar::Entry<R>) -> Result<Option<FileEntry>, VolumeError> {
    let header = entry.header();
    let path = clean_path(&String::from_utf8_lossy(&entry.path_bytes()));
    let kind = match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => EntryType::File,
        tar::EntryType::Directory => EntryType::Dir,
        tar::EntryType::Symlink => EntryType::Symlink,
        tar::EntryType::Link => EntryType::Hardlink,
        _ => return Ok(None),
    };
    if path.is_empty() && kind == EntryType::Dir {
        return Ok(None);
    }
    let target = match kind {
        EntryType::Symlink | EntryType::Hardlink => entry
            .link_name_bytes()
            .map(|b| clean_link(&String::from_utf8_lossy(&b), kind)),
        _ => None,
    };
    Ok(Some(FileEntry {
        path,
        kind,
        mode: header.mode().map_err(VolumeError::Tar)? & 0o7777,
        uid: header.uid().map_err(VolumeError::Tar)?,
        gid: header.gid().map_err(VolumeError::Tar)?,
        size: 0,
        mtime: header.mtime().map_err(VolumeError::Tar)?,
        target,
        chunks: Vec::new(),
        hash: None,
    }))
}

fn clean_link(target: &str, kind: EntryType) -> String {
    match kind {
        // A hard link names another entry of the archive.
        EntryType::Hardlink => clean_path(target),
        // A symlink's target is kept exactly.
        _ => target.to_string(),
    }
}

/// The file tree of a tar stream (paths, types, modes, sizes, content hashes) without storing
/// anything: what a drill compares a restored volume with.
pub async fn tree_of<R>(reader: R) -> Result<Vec<FileEntry>, VolumeError>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (make_reader, _stop_reader_on_drop) = blocking_reader(reader);
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for_each_entry(make_reader(), |mut entry| {
            let Some(mut fe) = entry_meta(&entry)? else {
                return Ok(());
            };
            if fe.kind == EntryType::File {
                let mut hasher = blake3::Hasher::new();
                fe.size = std::io::copy(&mut entry, &mut hasher).map_err(VolumeError::Tar)?;
                fe.hash = Some(hasher.finalize().to_hex().to_string());
            }
            out.push(fe);
            Ok(())
        })?;
        Ok(out)
    })
    .await
    .map_err(|e| VolumeError::Pipeline(e.to_string()))?
}

/// Store a file tree as tree blobs (at most 1000 entries each). Returns their ids in order.
pub async fn store_tree(packer: &Packer, entries: &[FileEntry]) -> Result<Vec<BlobId>, RepoError> {
    let mut ids = Vec::new();
    for part in entries.chunks(TREE_ENTRIES) {
        let blob = serde_json::to_vec(&TreeBlob {
            entries: part.to_vec(),
        })
        .expect("trees serialize");
        ids.push(packer.add(BlobType::Tree, &blob).await?);
    }
    Ok(ids)
}

/// Read a volume's file tree back.
pub async fn load_tree(repo: &Repository, trees: &[BlobId]) -> Result<Vec<FileEntry>, RepoError> {
    let mut out = Vec::new();
    for id in trees {
        let t: TreeBlob = repo.read_blob_json(id).await?;
        out.extend(t.entries);
    }
    Ok(out)
}

fn header_for(e: &FileEntry) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    match e.kind {
        EntryType::File => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(e.size);
        }
        EntryType::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
        }
        EntryType::Symlink => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
        }
        EntryType::Hardlink => {
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
        }
    }
    h
}

/// A GNU long-name (`L`) or long-link (`K`) record for names over 100 bytes.
fn long_record(kind: tar::EntryType, name: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.as_gnu_mut().expect("gnu header").name[..13].copy_from_slice(b"././@LongLink");
    h.set_mode(0o644);
    h.set_size(name.len() as u64 + 1);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(name);
    out.push(0);
    pad(&mut out);
    out
}

fn pad(buf: &mut Vec<u8>) {
    let rem = buf.len() % 512;
    if rem != 0 {
        buf.resize(buf.len() + 512 - rem, 0);
    }
}

/// The header bytes (with long-name records when needed) of one entry.
fn header_bytes(e: &FileEntry) -> Vec<u8> {
    let mut out = Vec::new();
    let name = if e.kind == EntryType::Dir {
        format!("{}/", e.path)
    } else {
        e.path.clone()
    };
    let mut h = header_for(e);
    if name.len() > 100 {
        out.extend(long_record(tar::EntryType::GNULongName, name.as_bytes()));
    }
    let short = &name.as_bytes()[..name.len().min(100)];
    h.as_gnu_mut().expect("gnu header").name[..short.len()].copy_from_slice(short);
    if let Some(t) = &e.target {
        if t.len() > 100 {
            out.extend(long_record(tar::EntryType::GNULongLink, t.as_bytes()));
        }
        let short = &t.as_bytes()[..t.len().min(100)];
        h.as_gnu_mut().expect("gnu header").linkname[..short.len()].copy_from_slice(short);
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out
}

/// The exact length in bytes of the stream [`write_tar`] writes for `entries`. A mover's
/// `tar -x` reads exactly this much (`head -c N | tar -x`): busybox tar, the default mover
/// image's, reads its input to EOF even after the end-of-archive marker, and an exec's stdin EOF
/// does not reach the container through every API server, kubelet and client.
pub fn tar_stream_len(entries: &[FileEntry]) -> u64 {
    let mut total = 0u64;
    for e in entries {
        total += header_bytes(e).len() as u64;
        if e.kind == EntryType::File {
            total += e.size.div_ceil(512) * 512;
        }
    }
    total += 1024;
    let record = 10240;
    total + (record - total % record) % record
}

/// Write the tree as a tar stream (GNU format) into `w`, reading the chunks from the
/// repository (`prefetch` chunks ahead). The stream ends with the two zero blocks and is padded
/// to whole 10240-byte records, as GNU tar writes archives: a `tar -x` reading it from a pipe
/// finishes at the end-of-archive marker even where stdin EOF never arrives (kwok's exec, see
/// docs/dev/kwok-exec.md). `w` is then flushed and shut down (closing stdin of a remote
/// `tar -x`).
pub async fn write_tar<W>(
    repo: Arc<Repository>,
    entries: &[FileEntry],
    mut w: W,
    prefetch: usize,
    counters: Arc<Counters>,
) -> Result<(), VolumeError>
where
    W: AsyncWrite + Unpin,
{
    use futures::StreamExt;
    // Chunks in stream order, fetched concurrently, delivered in order.
    let ids: Vec<BlobId> = entries
        .iter()
        .flat_map(|e| e.chunks.iter().copied())
        .collect();
    let mut chunks = futures::stream::iter(ids.into_iter().map(|id| {
        let repo = repo.clone();
        async move { repo.read_blob(&id).await }
    }))
    .buffered(prefetch.max(1));
    let mut total = 0u64;
    for e in entries {
        let h = header_bytes(e);
        total += h.len() as u64;
        w.write_all(&h).await.map_err(VolumeError::Write)?;
        if e.kind != EntryType::File {
            counters.files.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut written = 0u64;
        for _ in 0..e.chunks.len() {
            let data = chunks
                .next()
                .await
                .ok_or_else(|| VolumeError::Pipeline("chunk stream ended early".into()))?
                .map_err(|err| {
                    VolumeError::Pipeline(format!(
                        "file {}: a chunk of it cannot be read from the repository: {}",
                        e.path,
                        crate::error::display_chain(&err)
                    ))
                })?;
            w.write_all(&data).await.map_err(VolumeError::Write)?;
            written += data.len() as u64;
            counters
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        if written != e.size {
            return Err(VolumeError::Pipeline(format!(
                "{}: the stored chunks hold {written} bytes, the tree says {}",
                e.path, e.size
            )));
        }
        total += written;
        let rem = (written % 512) as usize;
        if rem != 0 {
            w.write_all(&vec![0u8; 512 - rem])
                .await
                .map_err(VolumeError::Write)?;
            total += (512 - rem) as u64;
        }
        counters.files.fetch_add(1, Ordering::Relaxed);
    }
    total += 1024;
    let record = 10240;
    let end = 1024 + (record - total % record) % record;
    w.write_all(&vec![0u8; end as usize])
        .await
        .map_err(VolumeError::Write)?;
    w.flush().await.map_err(VolumeError::Write)?;
    w.shutdown().await.map_err(VolumeError::Write)?;
    Ok(())
}

/// `tree` as the kubelet leaves it after mounting the volume into a pod with `fsGroup`
/// (fsGroupChangePolicy `Always`, or `OnRootMismatch` with a mismatched root): files and
/// directories get group `fs_group`, files `g+rw` (and `u+rw`), directories `ug+rwx` and setgid;
/// symlinks are left alone.
pub fn as_after_fs_group(tree: &[FileEntry], fs_group: u64) -> Vec<FileEntry> {
    tree.iter()
        .map(|e| {
            let mut e = e.clone();
            match e.kind {
                EntryType::File | EntryType::Hardlink => {
                    e.gid = fs_group;
                    e.mode |= 0o660;
                }
                EntryType::Dir => {
                    e.gid = fs_group;
                    e.mode |= 0o2770;
                }
                EntryType::Symlink => {}
            }
            e
        })
        .collect()
}

/// Differences between two file trees (paths, types, sizes, content hashes, modes, link
/// targets), each naming the file. Empty: equal.
///
/// Hard links are compared as what they are, a group of names for one file: which name of a
/// group tar stores as the file and which as links depends on the order the source filesystem
/// lists a directory in (ext4 and tmpfs differ), so a member is compared as the file it names,
/// plus the set of names in its group. Owners are compared too.
pub fn compare_trees(want: &[FileEntry], got: &[FileEntry]) -> Vec<String> {
    /// Each path with hard links resolved to the file they name, and the path's link group.
    fn index(v: &[FileEntry]) -> BTreeMap<String, (FileEntry, Vec<String>)> {
        let by_path: BTreeMap<&str, &FileEntry> = v.iter().map(|e| (e.path.as_str(), e)).collect();
        // The file each name is: a hard link's target (followed through links to links).
        let file_of = |e: &FileEntry| -> String {
            let mut cur = e;
            for _ in 0..v.len() {
                match (
                    &cur.kind,
                    cur.target.as_deref().and_then(|t| by_path.get(t)),
                ) {
                    (EntryType::Hardlink, Some(t)) => cur = t,
                    _ => break,
                }
            }
            cur.path.clone()
        };
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in v {
            if matches!(e.kind, EntryType::File | EntryType::Hardlink) {
                groups.entry(file_of(e)).or_default().push(e.path.clone());
            }
        }
        v.iter()
            .map(|e| {
                let (resolved, group) = match e.kind {
                    EntryType::File | EntryType::Hardlink => {
                        let f = file_of(e);
                        let mut file = by_path
                            .get(f.as_str())
                            .map(|x| (*x).clone())
                            .unwrap_or_else(|| e.clone());
                        file.path = e.path.clone();
                        if file.kind == EntryType::Hardlink {
                            // A link whose target is not in the tree: compared as a link.
                            (file, Vec::new())
                        } else {
                            file.target = None;
                            let mut g = groups.get(&f).cloned().unwrap_or_default();
                            g.sort();
                            (file, if g.len() > 1 { g } else { Vec::new() })
                        }
                    }
                    _ => (e.clone(), Vec::new()),
                };
                (e.path.clone(), (resolved, group))
            })
            .collect()
    }
    let (a, b) = (index(want), index(got));
    let mut out = Vec::new();
    for (p, (w, wg)) in &a {
        match b.get(p) {
            None => out.push(format!("{p}: missing")),
            Some((g, gg)) => {
                if w.kind != g.kind {
                    out.push(format!("{p}: is a {:?}, was a {:?}", g.kind, w.kind));
                } else if w.size != g.size {
                    out.push(format!("{p}: {} bytes, was {}", g.size, w.size));
                } else if w.hash != g.hash {
                    out.push(format!("{p}: content differs"));
                } else if w.mode != g.mode {
                    out.push(format!("{p}: mode {:o}, was {:o}", g.mode, w.mode));
                } else if w.target != g.target {
                    out.push(format!("{p}: link target differs"));
                } else if (w.uid, w.gid) != (g.uid, g.gid) {
                    out.push(format!(
                        "{p}: owner {}:{}, was {}:{}",
                        g.uid, g.gid, w.uid, w.gid
                    ));
                } else if wg != gg {
                    out.push(format!(
                        "{p}: hard links differ ({}, was {})",
                        if gg.is_empty() {
                            "none".to_string()
                        } else {
                            gg.join(", ")
                        },
                        if wg.is_empty() {
                            "none".to_string()
                        } else {
                            wg.join(", ")
                        }
                    ));
                }
            }
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            out.push(format!("{p}: not in the backup"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
