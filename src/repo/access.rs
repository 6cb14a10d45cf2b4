//! Opening a repository from the command line's settings: URL, password source, S3 options.
//! The password never appears in logs, errors or the process list.
use std::sync::Arc;

use zeroize::Zeroizing;

use super::crypto::KdfParams;
use super::{RepoError, Repository};
use crate::error::Error;
use crate::store::{self, RepoUrl, S3Options};

#[derive(Debug, Clone, Default)]
pub struct RepoOptions {
    pub url: String,
    pub password_file: Option<std::path::PathBuf>,
    pub password_command: Option<String>,
    pub s3: S3Options,
}

/// The password: --password-file, else --password-command, else LIFEBOAT_PASSWORD, else a prompt
/// when stdin is a terminal.
pub fn password(opts: &RepoOptions, confirm: bool) -> Result<Zeroizing<Vec<u8>>, RepoError> {
    if let Some(p) = &opts.password_file {
        let s = std::fs::read(p).map_err(|e| RepoError::PasswordFile {
            path: p.display().to_string(),
            message: e.to_string(),
        })?;
        let s = Zeroizing::new(s);
        let trimmed = s.strip_suffix(b"\n").unwrap_or(&s);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        return Ok(Zeroizing::new(trimmed.to_vec()));
    }
    if let Some(cmd) = &opts.password_command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| RepoError::PasswordCommand(e.to_string()))?;
        if !out.status.success() {
            return Err(RepoError::PasswordCommand(match out.status.code() {
                Some(c) => format!("it exited with code {c}"),
                None => "it was killed by a signal".into(),
            }));
        }
        let s = Zeroizing::new(out.stdout);
        let trimmed = s.strip_suffix(b"\n").unwrap_or(&s);
        return Ok(Zeroizing::new(trimmed.to_vec()));
    }
    if let Ok(p) = std::env::var("LIFEBOAT_PASSWORD") {
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let mut prompt = dialoguer::Password::new().with_prompt("Repository password");
        if confirm {
            prompt = prompt.with_confirmation("Repeat password", "passwords do not match");
        }
        let p = prompt
            .interact()
            .map_err(|e| RepoError::PasswordCommand(e.to_string()))?;
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    Err(RepoError::NoPassword)
}

/// A new password (`repo key add | passwd`): --new-password-file, else LIFEBOAT_NEW_PASSWORD,
/// else a prompt (asked twice) when stdin is a terminal. Never empty.
pub fn new_password(file: Option<&std::path::Path>) -> Result<Zeroizing<Vec<u8>>, Error> {
    let pw = if let Some(p) = file {
        let s = Zeroizing::new(std::fs::read(p).map_err(|e| RepoError::PasswordFile {
            path: p.display().to_string(),
            message: e.to_string(),
        })?);
        let trimmed = s.strip_suffix(b"\n").unwrap_or(&s);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        Zeroizing::new(trimmed.to_vec())
    } else if let Ok(p) = std::env::var("LIFEBOAT_NEW_PASSWORD") {
        Zeroizing::new(p.into_bytes())
    } else {
        use std::io::IsTerminal;
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Err(Error::Usage(
                "no new password: give --new-password-file or set LIFEBOAT_NEW_PASSWORD".into(),
            ));
        }
        let p = dialoguer::Password::new()
            .with_prompt("New repository password")
            .with_confirmation("Repeat the new password", "passwords do not match")
            .interact()
            .map_err(|e| RepoError::PasswordCommand(e.to_string()))?;
        Zeroizing::new(p.into_bytes())
    };
    if pw.is_empty() {
        return Err(Error::Usage("refusing an empty repository password".into()));
    }
    Ok(pw)
}

pub async fn store_for(opts: &RepoOptions) -> Result<store::DynStore, Error> {
    let url = RepoUrl::parse(&opts.url).map_err(Error::RepoUrl)?;
    store::open(&url, &opts.s3).await.map_err(|source| {
        Error::Repo(RepoError::Store {
            location: opts.url.clone(),
            source,
        })
    })
}

pub async fn open(opts: &RepoOptions) -> Result<Arc<Repository>, Error> {
    let store = store_for(opts).await?;
    let pw = password(opts, false)?;
    if pw.is_empty() {
        return Err(Error::Usage("the repository password is empty".into()));
    }
    Ok(Arc::new(Repository::open(store, &pw).await?))
}

pub async fn init(opts: &RepoOptions, kdf: KdfParams) -> Result<Arc<Repository>, Error> {
    let store = store_for(opts).await?;
    let pw = password(opts, true)?;
    if pw.is_empty() {
        return Err(Error::Usage("refusing an empty repository password".into()));
    }
    Ok(Arc::new(Repository::init(store, &pw, kdf).await?))
}
