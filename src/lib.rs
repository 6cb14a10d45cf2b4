//! lifeboat: Kubernetes upgrades and disaster recovery.
//!
//! The binary parses the command line ([`cli`]), resolves [`config::Settings`] and calls
//! [`run`], which dispatches to exactly one operation. Operations return values; reporters in
//! [`output`] print them. Errors are one typed enum ([`error::Error`]) whose variants decide the
//! exit code.
use clap::CommandFactory;

pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod logging;
pub mod output;
pub mod preflight;
pub mod store;
pub mod version;

use cli::{Cli, Command, ConfigCommand};
use config::Settings;
use error::{Error, Exit};

impl Settings {
    pub fn cluster_options(&self) -> cluster::ClusterOptions {
        cluster::ClusterOptions {
            kubeconfig: self.kubeconfig.value.clone(),
            context: self.context.value.clone(),
            connect_timeout: None,
        }
    }
}

/// Run one command.
pub async fn run(cli: Cli, settings: Settings) -> Result<Exit, Error> {
    let out = settings.output.value;
    match cli.command {
        Command::Version => {
            let report = version::version(&settings.cluster_options()).await;
            output::emit(out, &report)?;
            if let Some(e) = &report.server_error {
                eprintln!("warning: server version unavailable: {e}");
            }
            Ok(Exit::Success)
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "lifeboat", &mut std::io::stdout());
            Ok(Exit::Success)
        }
        Command::Config { command } => match command {
            ConfigCommand::View => {
                output::emit(out, &settings)?;
                Ok(Exit::Success)
            }
            ConfigCommand::Path => {
                let p = cli.global.config.clone().or_else(config::default_config_path);
                match p {
                    Some(p) => println!("{}", p.display()),
                    None => println!("(no configuration directory on this system)"),
                }
                Ok(Exit::Success)
            }
        },
        Command::Backup(c) => not_implemented(c.name(), 3),
        Command::Restore(_) => not_implemented("restore", 3),
        Command::Preflight(args) => {
            let opts = args.options();
            let report = preflight::preflight(&opts, &settings.cluster_options()).await?;
            output::emit(out, &report)?;
            Ok(report.exit(opts.fail_on))
        }
        Command::Runbook(c) => not_implemented(c.name(), 6),
        Command::Drill(c) => not_implemented(c.name(), 4),
        Command::Repo(c) => not_implemented(c.name(), 3),
    }
}

fn not_implemented(command: &str, issue: u32) -> Result<Exit, Error> {
    tracing::debug!(issue, "command not implemented yet");
    Err(Error::NotImplemented { command: format!("lifeboat {command}"), issue })
}

impl output::Render for Settings {
    fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        fn src(s: config::Source) -> &'static str {
            match s {
                config::Source::Flag => "flag",
                config::Source::Env => "env",
                config::Source::File => "file",
                config::Source::Default => "default",
            }
        }
        let file = self.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none)".into());
        writeln!(w, "{:<12} {:<50} SOURCE", "SETTING", "VALUE")?;
        writeln!(w, "{:<12} {:<50} -", "configFile", file)?;
        let kc = self.kubeconfig.value.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(KUBECONFIG or ~/.kube/config)".into());
        writeln!(w, "{:<12} {:<50} {}", "kubeconfig", kc, src(self.kubeconfig.source))?;
        writeln!(w, "{:<12} {:<50} {}", "context", self.context.value.as_deref().unwrap_or("(current context)"), src(self.context.source))?;
        writeln!(w, "{:<12} {:<50} {}", "output", format!("{:?}", self.output.value).to_lowercase(), src(self.output.source))?;
        writeln!(w, "{:<12} {:<50} {}", "logFormat", format!("{:?}", self.log_format.value).to_lowercase(), src(self.log_format.source))?;
        writeln!(w, "{:<12} {:<50} {}", "repo", self.repo.value, src(self.repo.source))?;
        Ok(())
    }
}
