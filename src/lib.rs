//! lifeboat: Kubernetes upgrades and disaster recovery.
//!
//! The binary parses the command line ([`cli`]), resolves [`config::Settings`] and calls
//! [`run`], which dispatches to exactly one operation. Operations return values; reporters in
//! [`output`] print them. Errors are one typed enum ([`error::Error`]) whose variants decide the
//! exit code.
use clap::CommandFactory;

pub mod backup;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod drill;
pub mod duration;
pub mod error;
pub mod faults;
pub mod logging;
pub mod notify;
pub mod output;
pub mod preflight;
pub mod repo;
pub mod restore;
pub mod runbook;
pub mod selector;
pub mod store;
pub mod version;
pub mod volume;
pub mod yaml;

use cli::backup::BackupCommand;
use cli::{Cli, Command, ConfigCommand, RepoCommand};
use config::Settings;
use error::{Error, Exit};

impl Settings {
    pub fn repo_options(&self, g: &cli::GlobalArgs) -> repo::access::RepoOptions {
        repo::access::RepoOptions {
            url: self.repo.value.clone(),
            password_file: g.password_file.clone(),
            password_command: g.password_command.clone(),
            s3: store::S3Options {
                endpoint: self.s3_endpoint.value.clone(),
                region: None,
                path_style: None,
            },
        }
    }

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
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "lifeboat", &mut buf);
            output::print_str(&String::from_utf8_lossy(&buf))?;
            Ok(Exit::Success)
        }
        Command::Config { command } => match command {
            ConfigCommand::View => {
                output::emit(out, &settings)?;
                Ok(Exit::Success)
            }
            ConfigCommand::Path => {
                let p = cli
                    .global
                    .config
                    .clone()
                    .or_else(config::default_config_path);
                match p {
                    Some(p) => output::print_str(&format!("{}\n", p.display()))?,
                    None => output::print_str("(no configuration directory on this system)\n")?,
                }
                Ok(Exit::Success)
            }
        },
        // `backup create` handles Ctrl-C itself: a volume backup removes its temporary
        // objects first.
        Command::Backup(c @ BackupCommand::Create(_)) => {
            backup_command(c, &cli.global, &settings).await
        }
        Command::Backup(c) => interruptible(backup_command(c, &cli.global, &settings)).await,
        // So does `restore`: the mover pods filling volumes are removed first.
        Command::Restore(args) => restore_command(args, &cli.global, &settings).await,
        Command::Preflight(args) => {
            let opts = args.options();
            let report = preflight::preflight(&opts, &settings.cluster_options()).await?;
            output::emit(out, &report)?;
            Ok(report.exit(opts.fail_on))
        }
        Command::Runbook(c) => runbook_command(c, &cli.global, &settings).await,
        Command::Drill(c) => drill_command(c, &cli.global, &settings).await,
        Command::Repo(RepoCommand::Check {
            read_data,
            read_data_subset,
        }) => {
            let repo = repo::access::open(&settings.repo_options(&cli.global)).await?;
            // Check only reads: when an exclusive (or unreadable) lock is held it still runs,
            // so a damaged lock file can be diagnosed, and says so.
            let lock = match repo::lock::Lock::acquire(repo.clone(), false, "check").await {
                Ok(l) => Some(l),
                Err(repo::RepoError::Locked(why)) => {
                    eprintln!(
                        "warning: checking without a lock ({why}): a running prune or repair may show as damage"
                    );
                    None
                }
                Err(e) => return Err(e.into()),
            };
            let report = backup::check::check(
                &repo,
                backup::check::CheckOptions {
                    read_data,
                    read_data_subset,
                },
            )
            .await;
            if let Some(lock) = lock {
                let _ = lock.release().await;
            }
            let report = report?;
            output::emit(out, &report)?;
            Ok(if report.ok {
                Exit::Success
            } else {
                Exit::Findings
            })
        }
        Command::Repo(RepoCommand::Repair { what, dry_run }) => {
            let repo = repo::access::open(&settings.repo_options(&cli.global)).await?;
            match what {
                cli::RepairTarget::Index => {
                    let r = backup::check::repair_index(repo, dry_run).await?;
                    output::emit(out, &r)?;
                    Ok(if r.damaged_packs.is_empty() {
                        Exit::Success
                    } else {
                        Exit::Findings
                    })
                }
                cli::RepairTarget::Snapshots => {
                    let r = backup::check::repair_snapshots(repo, dry_run).await?;
                    output::emit(out, &r)?;
                    Ok(Exit::Success)
                }
            }
        }
        Command::Repo(RepoCommand::Key { cmd }) => {
            use cli::KeyCommand;
            let opts = settings.repo_options(&cli.global);
            // The new password first: a missing one is reported before the KDF work of opening.
            let new_pw = match &cmd {
                KeyCommand::Add { new_password_file }
                | KeyCommand::Passwd { new_password_file } => {
                    Some(repo::access::new_password(new_password_file.as_deref())?)
                }
                _ => None,
            };
            let r = repo::access::open(&opts).await?;
            let kdf = repo::crypto::KdfParams::DEFAULT;
            match cmd {
                KeyCommand::List => output::emit(
                    out,
                    &repo::keys::KeyList {
                        keys: r.keys().await.map_err(Error::Repo)?,
                    },
                )?,
                KeyCommand::Add { .. } => output::emit(
                    out,
                    &r.add_key(&new_pw.expect("read above"), kdf)
                        .await
                        .map_err(Error::Repo)?,
                )?,
                KeyCommand::Remove { id } => {
                    output::emit(out, &r.remove_key(&id).await.map_err(Error::Repo)?)?
                }
                KeyCommand::Passwd { .. } => output::emit(
                    out,
                    &r.change_password(&new_pw.expect("read above"), kdf)
                        .await
                        .map_err(Error::Repo)?,
                )?,
            }
            Ok(Exit::Success)
        }
        Command::Repo(RepoCommand::Init) => {
            let opts = settings.repo_options(&cli.global);
            let r = repo::access::init(&opts, repo::crypto::KdfParams::DEFAULT).await?;
            #[derive(serde::Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Created {
                repository: String,
                id: String,
            }
            impl output::Render for Created {
                fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
                    writeln!(
                        w,
                        "created repository {} at {}",
                        &self.id[..8],
                        self.repository
                    )?;
                    writeln!(
                        w,
                        "Keep the password safe: without it the backups cannot be read by anyone."
                    )
                }
            }
            output::emit(
                out,
                &Created {
                    repository: r.location(),
                    id: r.config.id.clone(),
                },
            )?;
            Ok(Exit::Success)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut t = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = t.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn runbook_command(
    c: cli::runbook::RunbookCommand,
    g: &cli::GlobalArgs,
    settings: &Settings,
) -> Result<Exit, Error> {
    use cli::runbook::RunbookCommand;
    let out = settings.output.value;
    let exec = |e: &cli::runbook::ExecArgs| runbook::ExecOptions {
        yes: e.yes,
        approve: e.approve.clone(),
        force: e.force,
        lease_namespace: e.lease_namespace.clone(),
        quiet: g.quiet,
        shared_journal: !e.no_shared_journal,
        notify: e
            .notify
            .iter()
            .map(|url| notify::Target {
                url: url.clone(),
                format: e.notify_format,
                events: Vec::new(),
            })
            .collect(),
        ..Default::default()
    };
    // Shared journals of runs this machine does not have (best effort for listing).
    let pull = |ns: String, quiet_errors: bool| {
        let cluster_options = settings.cluster_options();
        async move {
            let mut copts = cluster_options;
            copts
                .connect_timeout
                .get_or_insert(std::time::Duration::from_secs(5));
            let r = async {
                let c = cluster::connect(&copts).await?;
                runbook::pull_shared(&c.client, &ns, None).await
            }
            .await;
            match r {
                Ok(_) => Ok(()),
                Err(e) if quiet_errors => {
                    tracing::info!("shared run journals not read: {}", error::display_chain(&e));
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    };
    let cluster_options = settings.cluster_options();
    let repo = settings.repo_options(g);
    match c {
        RunbookCommand::Validate { file, set } => {
            output::emit(out, &runbook::validate(&file, &set)?)?;
            Ok(Exit::Success)
        }
        RunbookCommand::List {
            shared,
            lease_namespace,
        } => {
            if shared {
                pull(lease_namespace, false).await?;
            }
            output::emit(out, &runbook::list(None)?)?;
            Ok(Exit::Success)
        }
        RunbookCommand::Logs { run, step, follow } => {
            runbook::logs(&run, step.as_deref(), follow, None, &mut std::io::stdout()).await?;
            Ok(Exit::Success)
        }
        RunbookCommand::Status {
            run,
            lease_namespace,
        } => {
            // Another machine may have gone on with the run: the newest copy is shown.
            match &run {
                Some(r) if !runbook::is_local_run(r, None) => pull(lease_namespace, false).await?,
                Some(_) => pull(lease_namespace, true).await?,
                None => {} // this machine's most recent run
            }
            output::emit(out, &runbook::status(run.as_deref(), None)?)?;
            Ok(Exit::Success)
        }
        RunbookCommand::Plan {
            runbook: rb,
            set,
            file,
        } => {
            // Check the file before connecting: a typo is reported without a cluster.
            runbook::spec::load(&rb)?;
            let cluster = cluster::connect(&cluster_options).await?;
            let planned =
                runbook::plan_command(&rb, &set, file, &cluster, &cluster_options, &repo).await?;
            output::emit(out, &planned)?;
            Ok(Exit::Success)
        }
        RunbookCommand::Run {
            plan,
            exec: e,
            dry_run,
        } => {
            let mut opts = exec(&e);
            opts.dry_run = dry_run;
            // A missing or edited plan is reported before the cluster is contacted.
            runbook::plan::load(&plan)?;
            let cluster = cluster::connect(&cluster_options).await?;
            let env = runbook::Env {
                cluster: &cluster,
                cluster_options: &cluster_options,
                repo: &repo,
            };
            let report = runbook::run_plan(&env, &plan, &opts).await?;
            output::emit(out, &report)?;
            Ok(report.exit_code())
        }
        RunbookCommand::Resume {
            run,
            exec: e,
            in_doubt,
        } => {
            let mut opts = exec(&e);
            opts.in_doubt = in_doubt;
            if e.no_shared_journal {
                runbook::status(Some(&run), None)?; // an unknown run id fails before connecting
            }
            let cluster = connect_for_run(&cluster_options, &run).await?;
            let env = runbook::Env {
                cluster: &cluster,
                cluster_options: &cluster_options,
                repo: &repo,
            };
            let report = runbook::continue_run(&env, &run, &opts, None).await?;
            output::emit(out, &report)?;
            Ok(report.exit_code())
        }
        RunbookCommand::Approve {
            run,
            step,
            lease_namespace,
            no_shared_journal,
        } => {
            let opts = runbook::ExecOptions {
                lease_namespace,
                shared_journal: !no_shared_journal,
                quiet: g.quiet,
                ..Default::default()
            };
            let cluster = connect_for_run(&cluster_options, &run).await?;
            let env = runbook::Env {
                cluster: &cluster,
                cluster_options: &cluster_options,
                repo: &repo,
            };
            let msg = runbook::approve(&env, &run, &step, &opts).await?;
            println!("{msg}");
            Ok(Exit::Success)
        }
        RunbookCommand::Rollback { run, to, exec: e } => {
            let opts = exec(&e);
            if e.no_shared_journal {
                runbook::status(Some(&run), None)?;
            }
            let cluster = connect_for_run(&cluster_options, &run).await?;
            let env = runbook::Env {
                cluster: &cluster,
                cluster_options: &cluster_options,
                repo: &repo,
            };
            let report = runbook::continue_run(&env, &run, &opts, Some(&to)).await?;
            output::emit(out, &report)?;
            Ok(report.rollback_exit_code())
        }
    }
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
        let file = self
            .config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(none)".into());
        writeln!(w, "{:<12} {:<50} SOURCE", "SETTING", "VALUE")?;
        writeln!(w, "{:<12} {:<50} -", "configFile", file)?;
        let kc = self
            .kubeconfig
            .value
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(KUBECONFIG or ~/.kube/config)".into());
        writeln!(
            w,
            "{:<12} {:<50} {}",
            "kubeconfig",
            kc,
            src(self.kubeconfig.source)
        )?;
        writeln!(
            w,
            "{:<12} {:<50} {}",
            "context",
            self.context.value.as_deref().unwrap_or("(current context)"),
            src(self.context.source)
        )?;
        writeln!(
            w,
            "{:<12} {:<50} {}",
            "output",
            format!("{:?}", self.output.value).to_lowercase(),
            src(self.output.source)
        )?;
        writeln!(
            w,
            "{:<12} {:<50} {}",
            "logFormat",
            format!("{:?}", self.log_format.value).to_lowercase(),
            src(self.log_format.source)
        )?;
        writeln!(
            w,
            "{:<12} {:<50} {}",
            "repo",
            self.repo.value,
            src(self.repo.source)
        )?;
        writeln!(
            w,
            "{:<12} {:<50} {}",
            "s3Endpoint",
            self.s3_endpoint.value.as_deref().unwrap_or("(AWS)"),
            src(self.s3_endpoint.source)
        )?;
        Ok(())
    }
}

/// Run `fut`; Ctrl-C / SIGTERM stops it (dropping it cancels in-flight work) with exit 130.
async fn interruptible<F: std::future::Future<Output = Result<Exit, Error>>>(
    fut: F,
) -> Result<Exit, Error> {
    let term = async {
        #[cfg(unix)]
        {
            let mut t = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("signal handler");
            t.recv().await;
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    };
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
        _ = term => Err(Error::Interrupted),
    }
}

async fn backup_command(
    c: BackupCommand,
    g: &cli::GlobalArgs,
    settings: &Settings,
) -> Result<Exit, Error> {
    let out = settings.output.value;
    let ropts = settings.repo_options(g);
    match c {
        BackupCommand::Create(args) => {
            // A bad hooks file is reported before anything is contacted.
            let hook_rules = match &args.hooks {
                Some(f) => backup::hooks::load(f)?,
                None => Default::default(),
            };
            let is_default = settings.repo.source == config::Source::Default;
            let cluster = cluster::connect(&settings.cluster_options()).await?;
            // The repository opens (passphrase KDF) while discovery and listing start. The default
            // repository is created only once the cluster has answered (a failed backup leaves
            // nothing behind).
            let repository = async {
                match repo::access::open(&ropts).await {
                    Err(Error::Repo(repo::RepoError::NotInitialized { .. })) if is_default => {
                        cluster.client.apiserver_version().await.map_err(|source| {
                            crate::error::cluster_error(&cluster.server, source)
                        })?;
                        match repo::access::init(&ropts, repo::crypto::KdfParams::DEFAULT).await {
                            Ok(r) => Ok((r, true)),
                            // Another first backup created it a moment ago: use that one.
                            Err(Error::Repo(repo::RepoError::AlreadyInitialized { .. })) => {
                                repo::access::open(&ropts).await.map(|r| (r, false))
                            }
                            Err(e) => Err(e),
                        }
                    }
                    other => other.map(|r| (r, false)),
                }
            };
            let bar = std::sync::Arc::new(output::progress::BackupBar::new(g.quiet));
            let mut opts = args.options(settings.context.value.clone());
            if let Some(v) = opts.volumes.as_mut() {
                v.progress = !g.quiet;
            }
            opts.hooks.rules = hook_rules;
            opts.hooks.progress = !g.quiet;
            let cleanup = opts.volumes.as_ref().map(|v| v.cleanup.clone());
            let owed_hooks = Some(opts.hooks.pending.clone());
            let started = std::time::Instant::now();
            let result = tokio::select! {
                r = backup::create(repository, &cluster, &opts, bar.clone()) => r,
                _ = wait_for_signal() => {
                    // The backup's future is dropped: nothing was listed (the snapshot is
                    // written last). The application is resumed first (post hooks of the pods
                    // whose pre hook ran), then the temporary claims, pods and snapshots go.
                    if let Some(h) = owed_hooks {
                        for o in h.run_all(&cluster.client).await {
                            eprintln!(
                                "post hook {}/{}: {}",
                                o.namespace,
                                o.pod,
                                if o.ok { "ok" } else { o.message.as_str() }
                            );
                        }
                    }
                    if let Some(c) = cleanup {
                        for f in c.run(&cluster.client).await {
                            eprintln!("warning: could not delete {f}");
                        }
                    }
                    Err(Error::Interrupted)
                }
            };
            bar.finish();
            let scope = backup::report::Scope {
                cluster: &cluster.server,
                namespaces: &args.select.namespaces,
            };
            let failure = result
                .as_ref()
                .err()
                .map(|e| crate::error::display_chain(e));
            let metrics = backup::report::backup_metrics(
                &scope,
                result
                    .as_ref()
                    .map_err(|_| failure.as_deref().unwrap_or_default()),
                started.elapsed().as_secs_f64(),
                args.report.metrics_file.as_deref(),
            );
            let note = backup::report::note(
                "backup",
                &scope_name(&args.select.namespaces),
                match (&result, &failure) {
                    (Ok(s), _) => Ok((s.id.as_str(), s.describe())),
                    (Err(_), f) => Err(f.clone().unwrap_or_default()),
                },
            );
            report_outcome(
                &args.report,
                "lifeboat_backup",
                &cluster.server,
                &metrics,
                &note,
                result.is_ok(),
            )
            .await?;
            let summary = result?;
            if summary.repository_created && !g.quiet {
                eprintln!("created the default repository at {}", summary.repository);
            }
            output::emit(out, &summary)?;
            // A backup that could not read some types is kept (it holds the rest), but says so.
            Ok(if summary.warnings.is_empty() {
                Exit::Success
            } else {
                Exit::Findings
            })
        }
        BackupCommand::List(args) => {
            let repo = repo::access::open(&ropts).await?;
            output::emit(out, &backup::manage::list(&repo, &args.tags).await?)?;
            Ok(Exit::Success)
        }
        BackupCommand::Diff(a) => {
            let opts = backup::diff::DiffOptions {
                namespaces: a.namespaces.clone(),
                include_resources: a.include_resources.clone(),
                values: a.values,
                status: a.status,
            };
            let repo = repo::access::open(&ropts).await?;
            let report =
                match (&a.to, a.live) {
                    (Some(to), _) => backup::diff::backups(&repo, &a.from, to, &opts).await?,
                    (None, _) => {
                        let cluster = cluster::connect(&settings.cluster_options()).await?;
                        cluster.client.apiserver_version().await.map_err(|source| {
                            crate::error::cluster_error(&cluster.server, source)
                        })?;
                        backup::diff::live(&repo, &cluster.client, &a.from, &opts).await?
                    }
                };
            output::emit(out, &report)?;
            Ok(if report.has_differences() {
                Exit::Findings
            } else {
                Exit::Success
            })
        }
        BackupCommand::Describe { id } => {
            let repo = repo::access::open(&ropts).await?;
            output::emit(out, &backup::manage::describe(&repo, &id).await?)?;
            Ok(Exit::Success)
        }
        BackupCommand::Verify { id, read_data } => {
            let repo = repo::access::open(&ropts).await?;
            let lock = repo::lock::Lock::acquire(repo.clone(), false, "verify").await?;
            let report = backup::manage::verify(&repo, &id, read_data).await;
            let _ = lock.release().await;
            let report = report?;
            output::emit(out, &report)?;
            Ok(if report.ok {
                Exit::Success
            } else {
                Exit::Findings
            })
        }
        BackupCommand::Delete { ids } => {
            let repo = repo::access::open(&ropts).await?;
            output::emit(out, &backup::manage::delete(repo, &ids).await?)?;
            Ok(Exit::Success)
        }
        BackupCommand::Cronjob(a) => {
            let o = backup::cronjob::BackupCronJobOptions {
                schedule: a.schedule.clone(),
                namespace: a.namespace.clone(),
                image: a.image.clone(),
                secret: a.secret.clone(),
                repo: settings.repo.value.clone(),
                s3_endpoint: settings.s3_endpoint.value.clone(),
                namespaces: a.namespaces.clone(),
                snapshot_volumes: a.snapshot_volumes,
                volume_mode: format!("{:?}", a.volume_mode).to_lowercase(),
                hooks: !a.no_hooks,
                retention: a.retention(),
                drill: a.drill,
                drill_timeout_seconds: a.drill_timeout.as_secs(),
                pushgateway: a.pushgateway.clone(),
            };
            backup::cronjob::validate(&o).map_err(Error::Usage)?;
            output::print_str(&backup::cronjob::manifests(&o))?;
            Ok(Exit::Success)
        }
        BackupCommand::Prune(a) => {
            let repo = repo::access::open(&ropts).await?;
            let n = |v: Option<u32>| v.map(|v| v as usize);
            let opts = backup::manage::PruneOptions {
                retention: backup::manage::Retention {
                    last: n(a.keep_last),
                    hourly: n(a.keep_hourly),
                    daily: n(a.keep_daily),
                    weekly: n(a.keep_weekly),
                    monthly: n(a.keep_monthly),
                    keep_tags: a.keep_tags.clone(),
                },
                group_by: backup::manage::GroupBy::parse(&a.group_by).map_err(Error::Usage)?,
                dry_run: a.dry_run,
                safety_margin: a.safety_margin,
            };
            let location = repo.location();
            let started = std::time::Instant::now();
            let result = backup::manage::prune(repo, &opts).await;
            if !a.dry_run {
                let failure = result
                    .as_ref()
                    .err()
                    .map(|e| crate::error::display_chain(e));
                let metrics = backup::report::prune_metrics(
                    &location,
                    result
                        .as_ref()
                        .map_err(|_| failure.as_deref().unwrap_or_default()),
                    started.elapsed().as_secs_f64(),
                    a.report.metrics_file.as_deref(),
                );
                let note = backup::report::note(
                    "prune",
                    &location,
                    match (&result, &failure) {
                        (Ok(r), _) => Ok(("", r.describe())),
                        (Err(_), f) => Err(f.clone().unwrap_or_default()),
                    },
                );
                report_outcome(
                    &a.report,
                    "lifeboat_prune",
                    &location,
                    &metrics,
                    &note,
                    result.is_ok(),
                )
                .await?;
            }
            output::emit(out, &result?)?;
            Ok(Exit::Success)
        }
        BackupCommand::Export { id, file } => {
            let repo = repo::access::open(&ropts).await?;
            let lock = repo::lock::Lock::acquire(repo.clone(), false, "export").await?;
            let report = backup::manage::export(&repo, &id, &file).await;
            let _ = lock.release().await;
            let report = report?;
            output::emit(out, &report)?;
            Ok(if report.damaged.is_empty() {
                Exit::Success
            } else {
                Exit::Findings
            })
        }
    }
}

fn scope_name(namespaces: &[String]) -> String {
    if namespaces.is_empty() {
        "all namespaces".into()
    } else {
        namespaces.join(",")
    }
}

/// Write the metrics file, push them, post the notification. When the operation itself failed
/// its error is what the caller returns: a reporting failure is then only a warning.
async fn report_outcome(
    r: &cli::backup::ReportArgs,
    job: &str,
    group: &str,
    metrics: &str,
    note: &notify::Notification,
    succeeded: bool,
) -> Result<(), Error> {
    let mut problems: Vec<Error> = Vec::new();
    if let Some(p) = &r.metrics_file
        && let Err(e) = drill::report::write_atomic(p, metrics)
    {
        problems.push(e);
    }
    if let Some(url) = &r.pushgateway
        && let Err(e) = drill::report::push_job(url, job, group, metrics).await
    {
        problems.push(e);
    }
    if !r.notify.is_empty() {
        let outbox = notify::Outbox::new(
            r.notify
                .iter()
                .map(|u| notify::Target {
                    url: u.clone(),
                    format: r.notify_format,
                    events: Vec::new(),
                })
                .collect(),
            std::sync::Arc::new(notify::Http),
            std::sync::Arc::new(|s: &str| s.to_string()),
        );
        outbox.send(note);
        for w in outbox.flush(std::time::Duration::from_secs(20)).await {
            eprintln!("warning: {w}");
        }
    }
    match problems.into_iter().next() {
        Some(e) if succeeded => Err(e),
        Some(e) => {
            eprintln!("warning: {}", crate::error::display_chain(&e));
            Ok(())
        }
        None => Ok(()),
    }
}

async fn restore_command(
    a: cli::backup::RestoreArgs,
    g: &cli::GlobalArgs,
    settings: &Settings,
) -> Result<Exit, Error> {
    // Bad input fails before anything is contacted.
    let transforms = restore::transform::load_all(&a.transforms)?;
    let cluster = cluster::connect(&settings.cluster_options()).await?;
    cluster
        .client
        .apiserver_version()
        .await
        .map_err(|source| crate::error::cluster_error(&cluster.server, source))?;
    let mut restore_lock = None;
    let source = match (&a.from_archive, &a.backup) {
        (Some(f), _) => restore::Source::Archive {
            name: f.display().to_string(),
            objects: restore::archive::read(f)?,
        },
        (None, Some(spec)) => {
            let repo = repo::access::open(&settings.repo_options(g)).await?;
            // `latest -n shop`: the newest backup that holds shop (not whatever ran last).
            let filter = repo::snapshot::SnapshotFilter {
                namespaces: a.select.namespaces.clone(),
                ..Default::default()
            };
            let (id, _) = match repo.find_snapshot_in(spec, &filter).await {
                Err(repo::RepoError::NoSuchSnapshot(_))
                    if spec == "latest" && !filter.namespaces.is_empty() =>
                {
                    return Err(Error::Usage(format!(
                        "no backup holds namespace {} (it is not in backup latest or any other; see `lifeboat backup list`)",
                        filter.namespaces.join(", ")
                    )));
                }
                other => other?,
            };
            // Shared lock for the whole restore: no prune removes the data meanwhile.
            restore_lock = Some(repo::lock::Lock::acquire(repo.clone(), false, "restore").await?);
            restore::repository_source(repo, &id).await?
        }
        (None, None) => {
            return Err(Error::Usage(
                "give a backup id, `latest`, or --from-archive FILE".into(),
            ));
        }
    };
    let opts = restore::RestoreOptions {
        namespaces: a.select.namespaces.clone(),
        selector: a.select.selector.clone(),
        include_resources: a.select.include_resources.clone(),
        exclude_resources: a.select.exclude_resources.clone(),
        include_cluster_resources: a.select.include_cluster_resources,
        namespace_map: a.namespace_map.iter().cloned().collect(),
        existing: a.existing,
        dry_run: a.dry_run,
        preserve_nodeports: a.preserve_nodeports,
        crd_timeout: std::time::Duration::from_secs(a.crd_timeout),
        from_snapshot: a.from_snapshot,
        pvs_as_is: a.restore_pvs_as_is,
        restore_finished_jobs: a.restore_finished_jobs,
        storage_class_map: a.storage_class_map.iter().cloned().collect(),
        transforms,
        names: a.names.clone(),
        with_dependencies: a.with_dependencies,
        run_hooks: !a.no_hooks,
        bind_timeout: std::time::Duration::from_secs(a.bind_timeout),
        mover: volume::mover::MoverOptions {
            image: a.mover_image.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let report = tokio::select! {
        r = restore::restore(&cluster.client, source, &opts) => r?,
        _ = wait_for_signal() => {
            // What was already created stays (as with an interrupted `kubectl apply`); the
            // mover pods filling volumes are removed.
            for f in opts.cleanup.run(&cluster.client).await {
                eprintln!("warning: could not delete {f}");
            }
            return Err(Error::Interrupted);
        }
    };
    if let Some(l) = restore_lock {
        let _ = l.release().await;
    }
    output::emit(settings.output.value, &report)?;
    Ok(if report.failed > 0 {
        Exit::Findings
    } else {
        Exit::Success
    })
}

async fn drill_command(
    c: cli::drill::DrillCommand,
    g: &cli::GlobalArgs,
    settings: &Settings,
) -> Result<Exit, Error> {
    use cli::drill::DrillCommand;
    let out = settings.output.value;
    match c {
        DrillCommand::Cronjob(a) => {
            let o = drill::cronjob::CronJobOptions {
                schedule: a.schedule,
                namespace: a.namespace,
                image: a.image,
                secret: a.secret,
                repo: settings.repo.value.clone(),
                s3_endpoint: settings.s3_endpoint.value.clone(),
                drill_args: a
                    .namespaces
                    .iter()
                    .flat_map(|n| ["-n".to_string(), n.clone()])
                    .collect(),
                pushgateway: a.pushgateway,
                timeout_seconds: a.timeout.as_secs(),
            };
            drill::cronjob::validate(&o).map_err(Error::Usage)?;
            output::print_str(&drill::cronjob::manifests(&o))?;
            Ok(Exit::Success)
        }
        DrillCommand::Gc { all, dry_run } => {
            let cluster = cluster::connect(&settings.cluster_options()).await?;
            output::emit(out, &drill::gc(&cluster.client, all, dry_run).await?)?;
            Ok(Exit::Success)
        }
        DrillCommand::Run(a) => {
            let spec = a.spec.as_deref().map(drill::spec::load).transpose()?;
            let cluster = cluster::connect(&settings.cluster_options()).await?;
            cluster
                .client
                .apiserver_version()
                .await
                .map_err(|source| crate::error::cluster_error(&cluster.server, source))?;
            let repo = repo::access::open(&settings.repo_options(g)).await?;
            let opts = drill::DrillOptions {
                backup: a.backup,
                namespaces: a.namespaces,
                spec,
                timeout: a.timeout,
                keep: a.keep,
                cluster_label: a.cluster_name.unwrap_or_default(),
                on_wait: output::progress::waiting_spinner(g.quiet),
            };
            let cancel = async {
                #[cfg(unix)]
                {
                    let mut t =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .expect("signal handler");
                    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = t.recv() => {} }
                }
                #[cfg(not(unix))]
                let _ = tokio::signal::ctrl_c().await;
            };
            let result = drill::run(&cluster.client, &cluster.server, repo, &opts, cancel).await;
            output::progress::clear_spinner();
            let report = result?;
            if let Some(p) = &a.report {
                let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Encode {
                    format: "json",
                    source: Box::new(e),
                })?;
                drill::report::write_atomic(p, &json)?;
            }
            if let Some(p) = &a.junit {
                drill::report::write_atomic(p, &drill::report::junit(&report))?;
            }
            let last = drill::report::last_success(&report, a.metrics_file.as_deref());
            let metrics = drill::report::metrics(&report, &last);
            if let Some(p) = &a.metrics_file {
                drill::report::write_atomic(p, &metrics)?;
            }
            if let Some(url) = &a.pushgateway {
                drill::report::push(url, &report.cluster, &metrics).await?;
            }
            if !a.notify.is_empty() {
                let status = if report.passed { "passed" } else { "failed" };
                let mut n = notify::Notification::new(
                    "drill",
                    if report.passed { "finished" } else { "failed" },
                    &report.drill_id,
                    &report.backup_id,
                    status,
                );
                n.message = format!(
                    "drill of backup {}: {} ({} check(s) failed)",
                    &report.backup_id[..report.backup_id.len().min(12)],
                    status,
                    report.failed_checks()
                );
                let r = cli::backup::ReportArgs {
                    notify: a.notify.clone(),
                    notify_format: a.notify_format,
                    ..Default::default()
                };
                report_outcome(&r, "lifeboat_drill", &report.cluster, "", &n, true).await?;
            }
            output::emit(out, &report)?;
            Ok(if report.interrupted {
                Exit::Interrupted
            } else if report.passed {
                Exit::Success
            } else {
                Exit::Findings
            })
        }
    }
}

/// Connect for a command about `run`. A run this machine does not have can only be found in the
/// cluster (its shared journal): without a cluster, "no such run here" is the one clear answer.
async fn connect_for_run(
    cluster_options: &cluster::ClusterOptions,
    run: &str,
) -> Result<cluster::Cluster, Error> {
    match cluster::connect(cluster_options).await {
        Ok(c) => Ok(c),
        Err(e) if !runbook::is_local_run(run, None) => {
            runbook::status(Some(run), None)?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}
