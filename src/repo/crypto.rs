//! Keys, authenticated encryption and blob ids.
//!
//! - Master key: 32 bytes for XChaCha20-Poly1305 + 32 bytes for the keyed BLAKE3 hash that names
//!   blobs (so blob ids reveal nothing about content to someone without the key).
//! - Sealed data: `nonce (24 random bytes) || ciphertext || tag (16)`.
//! - Key files: the master key sealed with a key derived from the passphrase by argon2id.
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A blob id: keyed BLAKE3 of the plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<BlobId> {
        let v = hex::decode(s).ok()?;
        Some(BlobId(v.try_into().ok()?))
    }
}

impl std::fmt::Debug for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl std::fmt::Display for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BlobId, D::Error> {
        let s = String::deserialize(d)?;
        BlobId::from_hex(&s).ok_or_else(|| serde::de::Error::custom("invalid blob id"))
    }
}

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    enc: [u8; 32],
    mac: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("authentication failed: the data was modified, is corrupt, or was sealed with another key")]
pub struct Unauthentic;

pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("OS random numbers");
    b
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        MasterKey {
            enc: random(),
            mac: random(),
        }
    }

    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.mac, plaintext).as_bytes())
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.enc, plaintext)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, Unauthentic> {
        open_with(&self.enc, sealed)
    }

    /// Seal bound to `name` (authenticated, not stored): opening it under another name fails,
    /// so a file copied or replayed under another object key is detected.
    pub fn seal_bound(&self, plaintext: &[u8], name: &[u8]) -> Vec<u8> {
        seal_ad(&self.enc, plaintext, name)
    }

    pub fn open_bound(&self, sealed: &[u8], name: &[u8]) -> Result<Vec<u8>, Unauthentic> {
        open_ad(&self.enc, sealed, name)
    }

    fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[..32].copy_from_slice(&self.enc);
        b[32..].copy_from_slice(&self.mac);
        b
    }

    fn from_bytes(b: &[u8]) -> Option<MasterKey> {
        if b.len() != 64 {
            return None;
        }
        let mut k = MasterKey {
            enc: [0; 32],
            mac: [0; 32],
        };
        k.enc.copy_from_slice(&b[..32]);
        k.mac.copy_from_slice(&b[32..]);
        Some(k)
    }
}

fn seal_with(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    seal_ad(key, plaintext, b"")
}

fn seal_ad(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("encryption does not fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn open_with(key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, Unauthentic> {
    open_ad(key, sealed, b"")
}

fn open_ad(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, Unauthentic> {
    if sealed.len() < OVERHEAD {
        return Err(Unauthentic);
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| Unauthentic)
}

/// argon2id parameters, stored in each key file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// Upper bounds accepted from a key file: a tampered file must not make `open` allocate
    /// terabytes or spin for hours. 4 GiB, 64 passes, 16 lanes.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    pub const MAX_ITERATIONS: u32 = 64;
    pub const MAX_PARALLELISM: u32 = 16;

    pub fn check(&self) -> Result<(), KeyError> {
        if self.parallelism == 0
            || self.parallelism > Self::MAX_PARALLELISM
            || self.iterations == 0
            || self.iterations > Self::MAX_ITERATIONS
            || self.memory_kib > Self::MAX_MEMORY_KIB
            || self.memory_kib < 8 * self.parallelism
        {
            return Err(KeyError::Unsupported(format!(
                "key derivation parameters out of bounds (memory {} KiB, {} passes, {} lanes)",
                self.memory_kib, self.iterations, self.parallelism
            )));
        }
        Ok(())
    }

    /// 64 MiB, 3 passes: well above OWASP's minimum for argon2id, ~0.2 s on one core.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 1,
    };
}

/// A key file: the master key sealed by a passphrase.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyFile {
    pub version: u32,
    pub created: String,
    pub hostname: String,
    pub kdf: String,
    pub params: KdfParams,
    /// hex
    pub salt: String,
    /// hex of the sealed 64-byte master key
    pub sealed: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("wrong password (it does not open any key of this repository)")]
    WrongPassword,
    #[error("unsupported key file: {0}")]
    Unsupported(String),
}

fn derive(password: &[u8], salt: &[u8], p: KdfParams) -> Result<[u8; 32], KeyError> {
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| KeyError::Unsupported(format!("argon2 parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(password, salt, &mut out)
        .map_err(|e| KeyError::Unsupported(format!("argon2: {e}")))?;
    Ok(out)
}

impl KeyFile {
    pub fn seal(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        created: String,
        hostname: String,
    ) -> Result<KeyFile, KeyError> {
        params.check()?;
        let salt: [u8; 32] = random();
        let mut k = derive(password, &salt, params)?;
        let mut mk = master.to_bytes();
        let mut kf = KeyFile {
            version: 2,
            created,
            hostname,
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            sealed: String::new(),
        };
        let sealed = seal_ad(&k, &mk, &kf.metadata());
        k.zeroize();
        mk.zeroize();
        kf.sealed = hex::encode(sealed);
        Ok(kf)
    }

    /// Everything of a version-2 key file but the sealed key, as authenticated data: changing
    /// the parameters, salt, time or host of a key file makes it fail to open.
    fn metadata(&self) -> Vec<u8> {
        format!(
            "lifeboat key file v{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
            self.version,
            self.kdf,
            self.params.memory_kib,
            self.params.iterations,
            self.params.parallelism,
            self.salt,
            self.created,
            self.hostname
        )
        .into_bytes()
    }

    pub fn open(&self, password: &[u8]) -> Result<MasterKey, KeyError> {
        if !(self.version == 1 || self.version == 2) || self.kdf != "argon2id" {
            return Err(KeyError::Unsupported(format!(
                "version {} kdf {}",
                self.version, self.kdf
            )));
        }
        self.params.check()?;
        let salt = hex::decode(&self.salt).map_err(|_| KeyError::Unsupported("salt".into()))?;
        if !(16..=64).contains(&salt.len()) {
            return Err(KeyError::Unsupported("salt length".into()));
        }
        let sealed =
            hex::decode(&self.sealed).map_err(|_| KeyError::Unsupported("sealed key".into()))?;
        let mut k = derive(password, &salt, self.params)?;
        let opened = if self.version == 1 {
            open_with(&k, &sealed)
        } else {
            open_ad(&k, &sealed, &self.metadata())
        };
        k.zeroize();
        let mut bytes = opened.map_err(|_| KeyError::WrongPassword)?;
        let key = MasterKey::from_bytes(&bytes)
            .ok_or_else(|| KeyError::Unsupported("master key length".into()));
        bytes.zeroize();
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn seal_open_and_tamper() {
        let k = MasterKey::generate();
        let s = k.seal(b"secret value");
        assert_eq!(k.open(&s).unwrap(), b"secret value");
        assert!(
            !s.windows(6).any(|w| w == b"secret"),
            "ciphertext must not contain the plaintext"
        );
        for i in [0, NONCE_LEN, s.len() - 1] {
            let mut t = s.clone();
            t[i] ^= 1;
            assert!(k.open(&t).is_err(), "flipped byte {i} not detected");
        }
        assert!(MasterKey::generate().open(&s).is_err(), "another key");
        assert!(k.open(&s[..10]).is_err());
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), a.blob_id(b"y"));
    }

    #[test]
    fn key_files_open_only_with_the_password() {
        let k = MasterKey::generate();
        let f = KeyFile::seal(&k, b"correct horse", FAST, "t".into(), "h".into()).unwrap();
        let opened = f.open(b"correct horse").unwrap();
        assert_eq!(opened.blob_id(b"z"), k.blob_id(b"z"));
        assert!(matches!(f.open(b"wrong"), Err(KeyError::WrongPassword)));
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("correct horse"));
    }

    #[test]
    fn key_file_metadata_is_authenticated_and_bounded() {
        let k = MasterKey::generate();
        let f = KeyFile::seal(&k, b"pw", FAST, "t".into(), "h".into()).unwrap();
        let mut other_host = f.clone();
        other_host.hostname = "elsewhere".into();
        assert!(other_host.open(b"pw").is_err(), "hostname is authenticated");
        let mut weaker = f.clone();
        weaker.params.iterations = 2;
        assert!(weaker.open(b"pw").is_err(), "parameters are authenticated");
        let mut huge = f.clone();
        huge.params.memory_kib = u32::MAX;
        assert!(
            matches!(huge.open(b"pw"), Err(KeyError::Unsupported(m)) if m.contains("out of bounds")),
            "a huge memory parameter is refused before any work"
        );
        assert!(f.open(b"pw").is_ok());
    }

    #[test]
    fn bound_seals_open_only_under_their_name() {
        let k = MasterKey::generate();
        let s = k.seal_bound(b"snapshot", b"snapshots/a");
        assert_eq!(k.open_bound(&s, b"snapshots/a").unwrap(), b"snapshot");
        assert!(k.open_bound(&s, b"snapshots/b").is_err());
        assert!(k.open(&s).is_err());
    }
}
