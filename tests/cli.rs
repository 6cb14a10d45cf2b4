//! The command-line interface without a cluster: help, exit codes, completions, configuration
//! precedence, error messages.
mod common;

use common::Lifeboat;

#[test]
fn help_lists_every_command_group() {
    let r = Lifeboat::offline().run(&["--help"]);
    r.success();
    for group in [
        "backup",
        "restore",
        "preflight",
        "runbook",
        "drill",
        "version",
        "completions",
    ] {
        assert!(
            r.stdout().contains(group),
            "--help lacks {group}\n{}",
            r.describe()
        );
    }
}

#[test]
fn runbook_commands_without_their_input_fail_with_one_clear_line() {
    let lb = Lifeboat::offline();
    for (args, code, needle) in [
        (
            &["runbook", "validate", "runbooks/x.yaml"][..],
            1,
            "cannot read runbooks/x.yaml",
        ),
        (&["runbook", "run", "plan.yaml"], 1, "cannot read plan.yaml"),
        (&["runbook", "status"], 64, "no runs in"),
        (
            &["runbook", "rollback", "run-1", "--to", "start"],
            64,
            "no run run-1",
        ),
        (
            &["runbook", "plan", "x.yaml", "--set", "a"],
            64,
            "KEY=VALUE",
        ),
    ] {
        let r = lb.run(args);
        r.code_is(code);
        assert!(r.stderr().contains(needle), "{}", r.describe());
        assert!(
            r.stdout().is_empty(),
            "must not print anything that looks like a result\n{}",
            r.describe()
        );
    }
}

#[test]
fn usage_errors_exit_64() {
    let r = Lifeboat::offline().run(&["--no-such-flag", "version"]);
    r.code_is(64);
    assert!(r.stderr().contains("--no-such-flag"), "{}", r.describe());
    Lifeboat::offline()
        .run(&["version", "-o", "xml"])
        .code_is(64);
}

#[test]
fn completions_for_each_shell() {
    let lb = Lifeboat::offline();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef lifeboat"),
        ("fish", "complete -c lifeboat"),
    ] {
        let r = lb.run(&["completions", shell]);
        r.success();
        assert!(r.stdout().contains(marker), "{shell}: {}", r.describe());
        assert!(
            r.stdout().contains("preflight"),
            "{shell} completions lack subcommands"
        );
    }
}

#[test]
fn version_without_a_cluster_prints_client_and_one_line_exit_0() {
    let r = Lifeboat::offline().run(&["version"]);
    r.success();
    assert!(
        r.stdout().starts_with("Client Version: "),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.stderr().lines().count(),
        1,
        "exactly one line on stderr\n{}",
        r.describe()
    );
    assert!(
        r.stderr().contains("no kubeconfig found"),
        "{}",
        r.describe()
    );
}

#[test]
fn version_with_an_unreachable_cluster_exit_0_json() {
    // A port that nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lb = Lifeboat::offline();
    let kc = lb.home.path().join("kc.yaml");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: secret-token-value\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let r = lb.run(&[
        "version",
        "-o",
        "json",
        "--kubeconfig",
        kc.to_str().unwrap(),
    ]);
    r.success();
    let v = r.json();
    assert_eq!(v["clientVersion"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["serverVersion"].is_null());
    let err = v["serverError"].as_str().unwrap();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
    assert!(
        !r.stderr().contains("secret-token-value") && !r.stdout().contains("secret-token-value")
    );
}

#[test]
fn configuration_precedence_flag_env_file_default() {
    let lb = Lifeboat::offline();
    let cfg = lb.home.path().join(".config/lifeboat/config.yaml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();

    // default
    let v = lb.run(&["config", "view", "-o", "json"]).success().json();
    assert_eq!(v["output"]["source"], "flag"); // -o json itself is a flag
    assert_eq!(v["repo"]["source"], "default");
    assert!(
        v["repo"]["value"].as_str().unwrap().starts_with("file://"),
        "{v}"
    );
    assert!(
        v["repo"]["value"]
            .as_str()
            .unwrap()
            .contains(lb.home.path().to_str().unwrap()),
        "default repo in the data dir: {v}"
    );

    // file
    std::fs::write(
        &cfg,
        "repo: s3://from-file/p\ncontext: file-ctx\noutput: yaml\n",
    )
    .unwrap();
    let v = lb.run(&["config", "view", "-o", "json"]).success().json();
    assert_eq!(v["repo"]["value"], "s3://from-file/p");
    assert_eq!(v["repo"]["source"], "file");
    assert_eq!(v["context"]["value"], "file-ctx");
    // output from the file applies when no flag is given
    let r = lb.run(&["config", "view"]);
    r.success();
    assert!(
        r.stdout().contains("repo:"),
        "yaml output from the config file expected\n{}",
        r.describe()
    );

    // env beats file
    let lbe = Lifeboat {
        home: tempfile::tempdir().unwrap(),
        envs: vec![],
        kubeconfig: None,
    };
    let cfg2 = lbe.home.path().join(".config/lifeboat/config.yaml");
    std::fs::create_dir_all(cfg2.parent().unwrap()).unwrap();
    std::fs::write(&cfg2, "repo: s3://from-file/p\n").unwrap();
    let lbe = lbe.env("LIFEBOAT_REPO", "s3://from-env/p");
    let v = lbe.run(&["config", "view", "-o", "json"]).success().json();
    assert_eq!(v["repo"]["value"], "s3://from-env/p");
    assert_eq!(v["repo"]["source"], "env");

    // flag beats env
    let v = lbe
        .run(&[
            "config",
            "view",
            "-o",
            "json",
            "--repo",
            "file:///from/flag",
        ])
        .success()
        .json();
    assert_eq!(v["repo"]["value"], "file:///from/flag");
    assert_eq!(v["repo"]["source"], "flag");
}

#[test]
fn malformed_config_names_file_line_and_column() {
    let lb = Lifeboat::offline();
    let cfg = lb.home.path().join("bad.yaml");
    std::fs::write(&cfg, "repo: s3://x\nouput: json\n").unwrap();
    let r = lb.run(&["--config", cfg.to_str().unwrap(), "version"]);
    r.code_is(1);
    let want = format!("{}:2:1", cfg.display());
    assert!(r.stderr().contains(&want), "want {want}\n{}", r.describe());
    assert!(r.stderr().contains("ouput"), "{}", r.describe());
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
}

#[test]
fn log_format_json_emits_json_lines() {
    let r = Lifeboat::offline().run(&["-vv", "--log-format", "json", "version"]);
    r.success();
    let json_lines = r.stderr().lines().filter(|l| l.starts_with('{')).count();
    assert!(json_lines >= 1, "expected JSON log lines\n{}", r.describe());
    for l in r.stderr().lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    out.read_exact(&mut first).unwrap();
    drop(out); // like `| head -c 16`
    let status = common::wait_bounded(&mut child, "output into a closed pipe");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(status.code() == Some(0), "{status:?} {err}");
}
