//! Settings: command-line flag > environment variable > configuration file > default.
//!
//! clap already applies "flag > environment variable" (each global flag names its variable), so
//! this module only has to fill what is still unset from the configuration file and then from the
//! defaults, and remember where each value came from (`lifeboat config view`).
//!
//! The file is YAML at `$LIFEBOAT_CONFIG`, else `$XDG_CONFIG_HOME/lifeboat/config.yaml` (on Linux
//! `~/.config/lifeboat/config.yaml`). Unknown keys are rejected. Format: docs/config.md.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::{GlobalArgs, LogFormat, OutputFormat};
use crate::error::Error;

/// The configuration file's contents. Every key is optional.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigFile {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub output: Option<OutputFormat>,
    pub log_format: Option<LogFormat>,
    pub repo: Option<String>,
    pub s3_endpoint: Option<String>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Command-line flag or its environment variable (clap merges the two; see `source_of`).
    Flag,
    Env,
    File,
    Default,
}

#[derive(Debug, Clone, Serialize)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

/// The effective settings of one invocation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub config_file: Option<PathBuf>,
    pub kubeconfig: Setting<Option<PathBuf>>,
    pub context: Setting<Option<String>>,
    pub output: Setting<OutputFormat>,
    pub log_format: Setting<LogFormat>,
    pub repo: Setting<String>,
    pub s3_endpoint: Setting<Option<String>>,
}

/// The default configuration file path (whether or not it exists).
pub fn default_config_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("io", "lifeboat", "lifeboat")
        .map(|d| d.config_dir().join("config.yaml"))
}

/// The default repository: a local directory in the user's data dir, so `lifeboat backup create`
/// works with zero configuration.
pub fn default_repo_url() -> String {
    let dir = directories::ProjectDirs::from("io", "lifeboat", "lifeboat")
        .map(|d| d.data_dir().join("repository"))
        .unwrap_or_else(|| PathBuf::from(".lifeboat-repository"));
    format!("file://{}", dir.display())
}

/// Read a configuration file. A missing default file is not an error; a missing file that was
/// asked for explicitly is.
pub fn load_file(path: &Path, explicit: bool) -> Result<Option<ConfigFile>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(source) => {
            return Err(Error::ConfigRead {
                path: path.to_owned(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(Some(ConfigFile::default()));
    }
    serde_norway::from_str(&text)
        .map(Some)
        .map_err(|e| Error::ConfigParse {
            path: path.to_owned(),
            location: crate::yaml::location(&e),
            message: crate::yaml::message(&e),
        })
}

/// `env_var` is the variable clap reads for a flag: when it is set and the flag value equals the
/// environment's, the value came from the environment.
fn source_of(env_var: &str, present: bool, from_env: impl Fn(&str) -> bool) -> Source {
    if !present {
        return Source::Default;
    }
    match std::env::var(env_var) {
        Ok(v) if from_env(&v) => Source::Env,
        _ => Source::Flag,
    }
}

impl Settings {
    /// Resolve the settings from parsed flags (which already include their environment
    /// variables), the configuration file and the defaults.
    pub fn resolve(g: &GlobalArgs) -> Result<Settings, Error> {
        let (config_file, file) = match &g.config {
            Some(p) => (Some(p.clone()), load_file(p, true)?),
            None => match default_config_path() {
                Some(p) => {
                    let f = load_file(&p, false)?;
                    (f.as_ref().map(|_| p), f)
                }
                None => (None, None),
            },
        };
        let file = file.unwrap_or_default();

        fn pick<T: Clone>(
            flag: Option<T>,
            flag_src: Source,
            file: Option<T>,
            default: T,
        ) -> Setting<T> {
            match (flag, file) {
                (Some(v), _) => Setting {
                    value: v,
                    source: flag_src,
                },
                (None, Some(v)) => Setting {
                    value: v,
                    source: Source::File,
                },
                (None, None) => Setting {
                    value: default,
                    source: Source::Default,
                },
            }
        }

        let kc_src = source_of("LIFEBOAT_KUBECONFIG", g.kubeconfig.is_some(), |v| {
            g.kubeconfig.as_deref() == Some(Path::new(v))
        });
        let ctx_src = source_of("LIFEBOAT_CONTEXT", g.context.is_some(), |v| {
            g.context.as_deref() == Some(v)
        });
        let out_src = source_of("LIFEBOAT_OUTPUT", g.output.is_some(), |v| {
            g.output
                .and_then(|o| clap::ValueEnum::to_possible_value(&o))
                .is_some_and(|p| p.matches(v, true))
        });
        let log_src = source_of("LIFEBOAT_LOG_FORMAT", g.log_format.is_some(), |v| {
            g.log_format
                .and_then(|o| clap::ValueEnum::to_possible_value(&o))
                .is_some_and(|p| p.matches(v, true))
        });
        let repo_src = source_of("LIFEBOAT_REPO", g.repo.is_some(), |v| {
            g.repo.as_deref() == Some(v)
        });
        let s3_src = source_of("LIFEBOAT_S3_ENDPOINT", g.s3_endpoint.is_some(), |v| {
            g.s3_endpoint.as_deref() == Some(v)
        });
        let s3_endpoint = match (g.s3_endpoint.clone(), file.s3_endpoint.clone()) {
            (Some(v), _) => Setting {
                value: Some(v),
                source: s3_src,
            },
            (None, Some(v)) => Setting {
                value: Some(v),
                source: Source::File,
            },
            (None, None) => Setting {
                value: None,
                source: Source::Default,
            },
        };

        let kubeconfig = match (g.kubeconfig.clone(), file.kubeconfig.clone()) {
            (Some(v), _) => Setting {
                value: Some(v),
                source: kc_src,
            },
            (None, Some(v)) => Setting {
                value: Some(v),
                source: Source::File,
            },
            (None, None) => Setting {
                value: None,
                source: Source::Default,
            },
        };
        let context = match (g.context.clone(), file.context.clone()) {
            (Some(v), _) => Setting {
                value: Some(v),
                source: ctx_src,
            },
            (None, Some(v)) => Setting {
                value: Some(v),
                source: Source::File,
            },
            (None, None) => Setting {
                value: None,
                source: Source::Default,
            },
        };
        Ok(Settings {
            config_file,
            kubeconfig,
            context,
            output: pick(g.output, out_src, file.output, OutputFormat::Table),
            log_format: pick(g.log_format, log_src, file.log_format, LogFormat::Text),
            repo: pick(
                g.repo.clone(),
                repo_src,
                file.repo.clone(),
                default_repo_url(),
            ),
            s3_endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_rejected_with_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yaml");
        std::fs::write(&p, "context: prod\nrepoo: s3://x\n").unwrap();
        let err = load_file(&p, true).unwrap_err();
        let msg = crate::error::display_chain(&err);
        assert!(msg.contains(":2:1"), "{msg}");
        assert!(msg.contains("repoo"), "{msg}");
    }

    #[test]
    fn missing_default_file_is_fine_but_missing_explicit_file_is_not() {
        let p = Path::new("/nonexistent/lifeboat/config.yaml");
        assert!(load_file(p, false).unwrap().is_none());
        assert!(load_file(p, true).is_err());
    }

    #[test]
    fn file_values_parse() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "output: json\nlogFormat: json\nrepo: s3://b/p\n").unwrap();
        let f = load_file(&p, true).unwrap().unwrap();
        assert_eq!(f.output, Some(OutputFormat::Json));
        assert_eq!(f.log_format, Some(LogFormat::Json));
        assert_eq!(f.repo.as_deref(), Some("s3://b/p"));
    }
}
