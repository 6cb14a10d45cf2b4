//! The only place object keys are built. Layout (docs/repository-format.md):
//!
//! ```text
//! config                 repository id, format version, chunker parameters (plaintext JSON)
//! keys/<id>              master key sealed by a passphrase (argon2id + XChaCha20-Poly1305)
//! data/<2 hex>/<pack id> pack files: encrypted blobs + encrypted header
//! index/<id>             encrypted index files: which blobs live in which pack
//! snapshots/<id>         encrypted snapshot manifests (a backup exists once this is written)
//! locks/<id>             encrypted lock files
//! drills/<id>            encrypted drill verdicts (which backup a drill restored, and whether it passed)
//! ```
pub const CONFIG: &str = "config";
pub const KEYS: &str = "keys/";
pub const DATA: &str = "data/";
pub const INDEX: &str = "index/";
pub const SNAPSHOTS: &str = "snapshots/";
pub const LOCKS: &str = "locks/";
pub const DRILLS: &str = "drills/";

pub fn key_file(id: &str) -> String {
    format!("{KEYS}{id}")
}
pub fn pack(id: &str) -> String {
    format!("{DATA}{}/{id}", &id[..2.min(id.len())])
}
pub fn index(id: &str) -> String {
    format!("{INDEX}{id}")
}
pub fn snapshot(id: &str) -> String {
    format!("{SNAPSHOTS}{id}")
}
pub fn lock(id: &str) -> String {
    format!("{LOCKS}{id}")
}
pub fn drill(id: &str) -> String {
    format!("{DRILLS}{id}")
}

/// The id part of a key under `prefix` (`snapshots/abc` → `abc`; pack keys drop the fan-out).
pub fn id_of<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    let rest = key.strip_prefix(prefix)?;
    Some(rest.rsplit('/').next().unwrap_or(rest)).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_round_trip() {
        let p = super::pack("abcdef");
        assert_eq!(p, "data/ab/abcdef");
        assert_eq!(super::id_of(super::DATA, &p), Some("abcdef"));
        assert_eq!(super::id_of(super::SNAPSHOTS, "snapshots/x1"), Some("x1"));
        assert_eq!(super::id_of(super::SNAPSHOTS, "index/x1"), None);
    }
}
