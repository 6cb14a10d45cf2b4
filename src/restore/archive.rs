//! Export archives: a plain tar.gz of YAML files, one object per file, at
//! `<namespace or _cluster>/<resource>.<group or core>/<name>.yaml`, for humans and kubectl. Not
//! encrypted: `backup export` writes it only when asked. `restore --from-archive` reads it back.
use std::io::{Read, Write};
use std::path::Path;

use serde_json::Value;

use crate::error::Error;
use crate::repo::crypto::BlobId;
use crate::repo::snapshot::TreeEntry;

pub fn path_for(e: &TreeEntry) -> String {
    let scope = e.namespace.clone().unwrap_or_else(|| "_cluster".into());
    let group = if e.group.is_empty() {
        "core".to_string()
    } else {
        e.group.clone()
    };
    format!("{scope}/{}.{group}/{}.yaml", e.resource, e.name)
}

/// Write `objects` (entry + object) as a tar.gz.
pub fn write<'a>(
    file: &Path,
    objects: impl Iterator<Item = (&'a TreeEntry, Value)>,
) -> Result<u64, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    // Unencrypted Secrets: readable by the owner only.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(|source| Error::ReadFile {
            path: file.to_owned(),
            source,
        })?;
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut n = 0;
    for (e, obj) in objects {
        let yaml = serde_norway::to_string(&obj).map_err(|err| Error::Encode {
            format: "yaml",
            source: Box::new(err),
        })?;
        let mut h = tar::Header::new_gnu();
        h.set_size(yaml.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path_for(e), yaml.as_bytes())
            .map_err(|source| Error::Output { source })?;
        n += 1;
    }
    let gz = tar
        .into_inner()
        .map_err(|source| Error::Output { source })?;
    let mut f = gz.finish().map_err(|source| Error::Output { source })?;
    f.flush().map_err(|source| Error::Output { source })?;
    f.sync_all().map_err(|source| Error::Output { source })?;
    Ok(n)
}

/// Read an archive: every `*.yaml` member becomes an (entry, object) pair; the entry's type comes
/// from the object's apiVersion/kind and the `<resource>.<group>` directory.
pub fn read(file: &Path) -> Result<Vec<(TreeEntry, Value)>, Error> {
    let f = std::fs::File::open(file).map_err(|source| Error::ReadFile {
        path: file.to_owned(),
        source,
    })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let bad = |m: String| Error::DataFile {
        path: file.to_owned(),
        location: "0:0".into(),
        message: m,
    };
    let mut out = Vec::new();
    for member in tar
        .entries()
        .map_err(|e| bad(format!("not a tar.gz archive: {e}")))?
    {
        let mut member = member.map_err(|e| bad(format!("not a tar.gz archive: {e}")))?;
        let path = member
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .to_string();
        // `tar -C dir .` writes `./ns/…`: the same tree.
        let path = path.trim_start_matches("./").to_string();
        if !path.ends_with(".yaml") {
            continue;
        }
        let mut text = String::new();
        member
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("{path}: {e}")))?;
        let obj: Value = serde_norway::from_str(&text).map_err(|e| {
            bad(format!(
                "{path}:{}: {}",
                crate::yaml::location(&e),
                crate::yaml::message(&e)
            ))
        })?;
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() != 3 {
            return Err(bad(format!(
                "{path}: expected <namespace>/<resource>.<group>/<name>.yaml"
            )));
        }
        let (resource, group) = parts[1]
            .split_once('.')
            .ok_or_else(|| bad(format!("{path}: bad type directory")))?;
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let version = api_version
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let entry = TreeEntry {
            group: if group == "core" {
                String::new()
            } else {
                group.to_string()
            },
            version,
            resource: resource.to_string(),
            kind: obj["kind"].as_str().unwrap_or_default().to_string(),
            namespace: (parts[0] != "_cluster").then(|| parts[0].to_string()),
            name: obj["metadata"]["name"]
                .as_str()
                .unwrap_or(parts[2].trim_end_matches(".yaml"))
                .to_string(),
            blob: BlobId([0; 32]),
            size: text.len() as u64,
        };
        out.push((entry, obj));
    }
    Ok(out)
}
