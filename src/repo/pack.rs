//! Pack files: `blob_0 || blob_1 || … || sealed header || header length (u32 LE)`, where each
//! blob is sealed (zstd-compressed plaintext) and the header is the sealed JSON list of entries.
//! A pack is named by the SHA-256 of its bytes.
use serde::{Deserialize, Serialize};

use super::crypto::{BlobId, MasterKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// One Kubernetes object (JSON).
    Object,
    /// A tree: a list of references to other blobs (JSON).
    Tree,
    /// A chunk of volume data (reserved for volume backups).
    Chunk,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackEntry {
    #[serde(rename = "type")]
    pub kind: BlobType,
    pub id: BlobId,
    pub offset: u32,
    /// Sealed length in the pack.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

#[derive(Debug, Default)]
pub struct PackBuilder {
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn add(&mut self, kind: BlobType, id: BlobId, sealed: &[u8], raw_length: u32) {
        self.entries.push(PackEntry {
            kind,
            id,
            offset: self.data.len() as u32,
            length: sealed.len() as u32,
            raw_length,
        });
        self.data.extend_from_slice(sealed);
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn finish(mut self, key: &MasterKey) -> (Vec<u8>, Vec<PackEntry>) {
        let header = key.seal(&serde_json::to_vec(&self.entries).expect("serializable"));
        self.data.extend_from_slice(&header);
        self.data
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        (self.data, self.entries)
    }
}

/// Read a pack's header (for verify and index rebuilding).
pub fn read_header(key: &MasterKey, pack: &[u8]) -> Option<Vec<PackEntry>> {
    if pack.len() < 4 {
        return None;
    }
    let n = u32::from_le_bytes(pack[pack.len() - 4..].try_into().ok()?) as usize;
    let start = pack.len().checked_sub(4 + n)?;
    let plain = key.open(&pack[start..pack.len() - 4]).ok()?;
    serde_json::from_slice(&plain).ok()
}

/// A pack header given as its sealed bytes (the tail of the pack before the length).
pub fn parse_header(repo: &super::Repository, sealed: &[u8]) -> Option<Vec<PackEntry>> {
    let plain = repo.key.open(sealed).ok()?;
    serde_json::from_slice(&plain).ok()
}

/// [`read_header`] with a repository's key.
pub fn read_header_with(repo: &super::Repository, pack: &[u8]) -> Option<Vec<PackEntry>> {
    read_header(&repo.key, pack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let k = MasterKey::generate();
        let mut b = PackBuilder::default();
        let s1 = k.seal(b"one");
        let s2 = k.seal(b"two!");
        b.add(BlobType::Object, k.blob_id(b"one"), &s1, 3);
        b.add(BlobType::Tree, k.blob_id(b"two!"), &s2, 4);
        let (bytes, entries) = b.finish(&k);
        let h = read_header(&k, &bytes).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].offset as usize, s1.len());
        assert_eq!(entries[1].kind, BlobType::Tree);
        let blob = &bytes[h[1].offset as usize..(h[1].offset + h[1].length) as usize];
        assert_eq!(k.open(blob).unwrap(), b"two!");
        assert!(read_header(&MasterKey::generate(), &bytes).is_none());
    }
}
