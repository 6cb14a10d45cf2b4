//! Repository keys (`repo key list | add | remove | passwd`): several passwords for one
//! repository, each a key file sealing the same master key, so a password is added, rotated or
//! withdrawn without re-encrypting any data (docs/repository-format.md#keys).
//!
//! Safety rules: a new key is written and then proven (read back, opened with its password, and
//! its master key opens the config) before anything depends on it; the key that the current
//! password opened is never removed by `remove` (so at least that one stays), and `passwd`
//! removes it only after the new one is proven; `remove` and `passwd` hold the exclusive
//! repository lock, so two of them at once cannot take away each other's last key.
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::crypto::{KdfParams, KeyFile};
use super::lock::Lock;
use super::{RepoError, Repository, hostname, layout, now, open_config, sha2_256, store_err};

/// One key file as `repo key list` shows it. Nothing secret: key files are plaintext JSON
/// whose only sensitive part is sealed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub id: String,
    /// The key the given password opened.
    pub current: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kdf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<KdfParams>,
    /// Why the file is not a usable key file (corrupt, renamed, unknown format).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

/// What `repo key add | passwd | remove` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
    pub keys: usize,
}

impl Repository {
    /// The id of the key file the password opened.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Every key file, oldest first.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>, RepoError> {
        let store = &self.store;
        let mut out = Vec::new();
        for o in store.list(layout::KEYS).await.map_err(store_err(store))? {
            let Some(id) = layout::id_of(layout::KEYS, &o.key) else {
                continue;
            };
            let raw = store.get(&o.key).await.map_err(store_err(store))?;
            let mut info = KeyInfo {
                id: id.to_string(),
                current: id == self.key_id,
                created: None,
                hostname: None,
                kdf: None,
                params: None,
                damaged: None,
            };
            if hex::encode(&sha2_256(&raw)[..16]) != id {
                info.damaged = Some("content does not match its name (corrupt or tampered)".into());
            } else {
                match serde_json::from_slice::<KeyFile>(&raw) {
                    Ok(kf) => {
                        info.created = Some(kf.created);
                        info.hostname = Some(kf.hostname);
                        info.kdf = Some(kf.kdf);
                        info.params = Some(kf.params);
                    }
                    Err(e) => info.damaged = Some(format!("not a key file: {e}")),
                }
            }
            out.push(info);
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Seal this repository's master key with `password` as a new key file, and prove it: read
    /// back, opened with the password, its key opening the config. Returns its id.
    async fn write_key(&self, password: &[u8], kdf: KdfParams) -> Result<String, RepoError> {
        let key = self.key.clone();
        let pw = password.to_vec();
        let kf =
            tokio::task::spawn_blocking(move || KeyFile::seal(&key, &pw, kdf, now(), hostname()))
                .await
                .expect("kdf task")
                .map_err(|e| RepoError::Unsupported(e.to_string()))?;
        let json = serde_json::to_vec_pretty(&kf).expect("serializable");
        let id = hex::encode(&sha2_256(&json)[..16]);
        let name = layout::key_file(&id);
        self.store
            .put(&name, Bytes::from(json))
            .await
            .map_err(store_err(&self.store))?;
        crate::faults::point("key.after-write");
        let back = self
            .store
            .get(&name)
            .await
            .map_err(store_err(&self.store))?;
        let config = self
            .store
            .get(layout::CONFIG)
            .await
            .map_err(store_err(&self.store))?;
        let pw = password.to_vec();
        let proven = tokio::task::spawn_blocking(move || {
            let kf: KeyFile = serde_json::from_slice(&back).ok()?;
            let m = kf.open(&pw).ok()?;
            open_config(&m, &config).map(|_| ())
        })
        .await
        .expect("kdf task");
        if proven.is_none() {
            // Not usable: take it away again rather than leave a key that only looks right.
            let _ = self.store.delete(&name).await;
            return Err(RepoError::Corrupt {
                what: "the new key file (it did not read back as written)".into(),
                key: name,
            });
        }
        Ok(id)
    }

    /// `repo key add`: another password for this repository.
    pub async fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyChange, RepoError> {
        let id = self.write_key(password, kdf).await?;
        Ok(KeyChange {
            added: Some(id),
            removed: None,
            keys: self.keys().await?.len(),
        })
    }

    /// `repo key remove ID` (a unique prefix is enough). Never the key the current password
    /// opened: remove that one with another key's password, or replace it with `passwd`.
    pub async fn remove_key(self: &Arc<Self>, id: &str) -> Result<KeyChange, RepoError> {
        let lock = Lock::acquire(self.clone(), true, "key remove").await?;
        let result = async {
            let keys = self.keys().await?;
            let matching: Vec<&KeyInfo> = keys.iter().filter(|k| k.id.starts_with(id)).collect();
            let target = match matching.as_slice() {
                [] => {
                    return Err(RepoError::KeyNotFound(id.to_string()));
                }
                [one] => *one,
                _ => return Err(RepoError::KeyAmbiguous(id.to_string())),
            };
            if target.current {
                return Err(RepoError::KeyInUse(target.id.clone()));
            }
            // Under the lock, the key this password opened must still be there: it is the one
            // that stays. (Another process may have removed it after this one opened the
            // repository; removing the target then could leave no key at all.)
            if !keys.iter().any(|k| k.current && k.damaged.is_none()) {
                return Err(RepoError::KeyGone(self.key_id.clone()));
            }
            lock.ensure_held().await?;
            self.store
                .delete(&layout::key_file(&target.id))
                .await
                .map_err(store_err(&self.store))?;
            Ok(KeyChange {
                added: None,
                removed: Some(target.id.clone()),
                keys: keys.len() - 1,
            })
        }
        .await;
        // The change is done (or refused) either way: a lock that cannot be released is
        // reported, not turned into a failure of the change.
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "could not release the repository lock");
        }
        result
    }

    /// `repo key passwd`: a new password in place of the current one. The new key is written
    /// and proven before the current key file is deleted; a crash in between leaves both (either
    /// password opens the repository).
    pub async fn change_password(
        self: &Arc<Self>,
        password: &[u8],
        kdf: KdfParams,
    ) -> Result<KeyChange, RepoError> {
        let lock = Lock::acquire(self.clone(), true, "key passwd").await?;
        let result = async {
            let id = self.write_key(password, kdf).await?;
            crate::faults::point("key.passwd.before-remove");
            lock.ensure_held().await?;
            self.store
                .delete(&layout::key_file(&self.key_id))
                .await
                .map_err(store_err(&self.store))?;
            Ok(KeyChange {
                added: Some(id),
                removed: Some(self.key_id.clone()),
                // Done: a listing that fails now must not report the change as failed.
                keys: self.keys().await.map(|k| k.len()).unwrap_or(0),
            })
        }
        .await;
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "could not release the repository lock");
        }
        result
    }
}

/// `repo key list` output.
#[derive(Debug, Clone, Serialize)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

impl crate::output::Render for KeyList {
    fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(w, "  {:<34} {:<22} {:<16} KDF", "ID", "CREATED", "HOST")?;
        for k in &self.keys {
            let kdf = match (&k.kdf, &k.params) {
                (Some(n), Some(p)) => {
                    format!("{n} {} MiB, {} passes", p.memory_kib / 1024, p.iterations)
                }
                _ => String::new(),
            };
            writeln!(
                w,
                "{} {:<34} {:<22} {:<16} {}",
                if k.current { "*" } else { " " },
                k.id,
                k.created
                    .as_deref()
                    .map(|c| &c[..c.len().min(19)])
                    .unwrap_or("-"),
                k.hostname.as_deref().unwrap_or("-"),
                k.damaged
                    .as_ref()
                    .map(|d| format!("DAMAGED: {d}"))
                    .unwrap_or(kdf)
            )?;
        }
        writeln!(w, "* the key this password opened")
    }
}

impl crate::output::Render for KeyChange {
    fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        if let Some(a) = &self.added {
            writeln!(w, "added key {a}")?;
        }
        if let Some(r) = &self.removed {
            writeln!(w, "removed key {r}")?;
        }
        writeln!(w, "the repository has {} key(s)", self.keys)
    }
}
