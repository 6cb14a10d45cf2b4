//! The library's one error type. Every variant keeps its cause; the exit code of each is decided
//! here and nowhere else (see the exit-code table in the README).
use std::path::PathBuf;

/// Process exit codes: part of the command-line interface, documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Success = 0,
    /// The operation could not run: bad input, unreachable cluster or store, not implemented.
    Failure = 1,
    /// The operation ran and found problems: a drill check failed, preflight findings at or above
    /// `--fail-on`, a verify found damage.
    Findings = 2,
    /// Blocking findings: preflight found APIs removed by the target or a failed blocker check
    /// (pluto-compatible); a runbook stopped at a step that needs approval (resumable).
    Blocked = 3,
    /// A runbook rollback could not finish: what is left to undo by hand is printed.
    RollbackFailed = 4,
    /// The command line itself was wrong (unknown flag, missing argument).
    Usage = 64,
    /// Interrupted by Ctrl-C / SIGTERM after cleaning up.
    Interrupted = 130,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{command}` is not implemented yet (tracked in issue #{issue})")]
    NotImplemented { command: String, issue: u32 },

    #[error("cannot read the configuration file {path}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid configuration file {path}:{location}: {message}")]
    ConfigParse {
        path: PathBuf,
        location: String,
        message: String,
    },

    #[error("cannot load the kubeconfig")]
    Kubeconfig {
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// Neither a kubeconfig nor an in-cluster service account was found. The inference error
    /// is kept for `-vv` logs but not shown: it lists every place tried, which is noise here.
    #[error(
        "no cluster configured: no kubeconfig found (set --kubeconfig, KUBECONFIG or ~/.kube/config)"
    )]
    NoCluster { detail: String },

    #[error("cannot create a Kubernetes client")]
    Client {
        #[source]
        source: kube::Error,
    },

    #[error("cannot reach the cluster at {server}")]
    Unreachable {
        server: String,
        #[source]
        source: kube::Error,
    },

    #[error("{path}:{location}: {message}")]
    DataFile {
        path: PathBuf,
        location: String,
        message: String,
    },

    #[error("cannot read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("--target 1.N is required: {reason}")]
    NeedTarget { reason: String },

    #[error("API discovery failed")]
    Discovery {
        #[source]
        source: kube::Error,
    },

    #[error("cannot {action}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),

    #[error("invalid repository URL: {0}")]
    RepoUrl(String),

    #[error("{0}")]
    Usage(String),

    /// A runbook run could not start or continue (plan changed, wrong cluster, plan in use).
    #[error("{0}")]
    Runbook(String),

    #[error("interrupted")]
    Interrupted,

    /// Internal: a task stopped because another part of the same operation failed (that
    /// failure is the one reported).
    #[error("stopped because another part of the operation failed")]
    Aborted,

    #[error("{format} output is not available for this command")]
    UnsupportedOutput { format: &'static str },

    #[error("the cluster at {server} refused the credentials ({code} {reason}{})", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Unauthorized {
        server: String,
        code: u16,
        reason: String,
        message: String,
    },

    #[error("nothing was backed up: {0}")]
    NothingBackedUp(String),

    #[error("cannot write output")]
    Output {
        #[source]
        source: std::io::Error,
    },

    #[error("cannot encode output as {format}")]
    Encode {
        format: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    pub fn exit_code(&self) -> Exit {
        match self {
            Error::NotImplemented { .. }
            | Error::ConfigRead { .. }
            | Error::ConfigParse { .. }
            | Error::Kubeconfig { .. }
            | Error::NoCluster { .. }
            | Error::Client { .. }
            | Error::Unreachable { .. }
            | Error::Output { .. }
            | Error::Encode { .. }
            | Error::DataFile { .. }
            | Error::ReadFile { .. }
            | Error::WriteFile { .. }
            | Error::NeedTarget { .. }
            | Error::Discovery { .. }
            | Error::Kube { .. }
            | Error::UnsupportedOutput { .. }
            | Error::Repo(_)
            | Error::RepoUrl(_)
            | Error::Unauthorized { .. }
            | Error::NothingBackedUp(_)
            | Error::Runbook(_)
            | Error::Aborted => Exit::Failure,
            Error::Usage(_) => Exit::Usage,
            Error::Interrupted => Exit::Interrupted,
        }
    }
}

/// One line: the error and its causes joined by ": ", skipping causes whose text the previous
/// message already contains (kube and hyper often repeat themselves).
pub fn display_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out.replace('\n', " ")
}

/// The error for a failed first request to the cluster: refused credentials, or unreachable.
pub fn cluster_error(server: &str, source: kube::Error) -> Error {
    match source {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => Error::Unauthorized {
            server: server.to_string(),
            code: s.code,
            reason: s.reason.clone(),
            message: s.message.clone(),
        },
        source => Error::Unreachable {
            server: server.to_string(),
            source,
        },
    }
}
