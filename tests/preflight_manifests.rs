//! `lifeboat preflight --no-cluster`: manifests from files, directories and stdin.
mod common;

use std::io::Write;
use std::process::Stdio;

use common::Lifeboat;

fn write(dir: &std::path::Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn directory_scan_with_lines_lists_and_broken_documents() {
    let lb = Lifeboat::offline();
    let d = lb.home.path().join("manifests");
    write(
        &d,
        "app/deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ok\n---\napiVersion: extensions/v1beta1\nkind: Ingress\nmetadata:\n  name: web\n  namespace: shop\n",
    );
    write(
        &d,
        "app/list.yml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: policy/v1beta1\n  kind: PodSecurityPolicy\n  metadata: {name: restricted}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: s}\n",
    );
    write(
        &d,
        "cron.json",
        r#"{"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": "nightly"}}"#,
    );
    write(
        &d,
        "broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n",
    );
    write(
        &d,
        "README.md",
        "apiVersion: extensions/v1beta1\nkind: Ingress\n",
    ); // not a manifest extension
    write(
        &d,
        "deep/er/hpa.yaml",
        "apiVersion: autoscaling/v2beta2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: h\n",
    );

    let r = lb.run(&[
        "preflight",
        "--no-cluster",
        "--target",
        "1.25",
        "--manifests",
        d.to_str().unwrap(),
        "-o",
        "json",
    ]);
    r.code_is(3);
    let v = r.json();
    let f = v["findings"].as_array().unwrap();
    let got: Vec<(String, String, String, String)> = f
        .iter()
        .map(|f| {
            let file = f["file"]
                .as_str()
                .unwrap()
                .rsplit("manifests/")
                .next()
                .unwrap()
                .to_string();
            (
                format!("{file}:{}", f["line"]),
                f["kind"].as_str().unwrap().into(),
                f["apiVersion"].as_str().unwrap().into(),
                f["severity"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        (
            "app/deploy.yaml:6",
            "Ingress",
            "extensions/v1beta1",
            "error",
        ),
        (
            "app/list.yml:4",
            "PodSecurityPolicy",
            "policy/v1beta1",
            "error",
        ),
        ("cron.json:1", "CronJob", "batch/v1beta1", "error"),
        (
            "deep/er/hpa.yaml:1",
            "HorizontalPodAutoscaler",
            "autoscaling/v2beta2",
            "warning",
        ),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for w in want {
        assert!(
            got.contains(&(
                w.0.to_string(),
                w.1.to_string(),
                w.2.to_string(),
                w.3.to_string()
            )),
            "missing {w:?} in {got:#?}"
        );
    }
    let psp = f.iter().find(|f| f["kind"] == "PodSecurityPolicy").unwrap();
    assert!(psp["replacement"].is_null());
    assert_eq!(
        f.iter().find(|f| f["kind"] == "Ingress").unwrap()["namespace"],
        "shop"
    );
    assert_eq!(
        f.iter().find(|f| f["kind"] == "CronJob").unwrap()["replacement"],
        "batch/v1"
    );
    // The broken document is reported with file:line and the rest of the file was scanned.
    let notes: Vec<&str> = v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("broken.yaml:9:") || notes[0].contains("broken.yaml:10:"),
        "{notes:?}"
    );
    assert_eq!(v["summary"]["filesScanned"], 5);
    assert_eq!(v["summary"]["objectsScanned"], 8, "{}", r.describe());
}

#[test]
fn fail_on_levels_and_targets() {
    let lb = Lifeboat::offline();
    let d = lb.home.path().join("m");
    write(
        &d,
        "hpa.yaml",
        "apiVersion: autoscaling/v2beta2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: h\n",
    );
    let m = d.to_str().unwrap();
    // deprecated in 1.23, removed in 1.26
    lb.run(&[
        "preflight",
        "--no-cluster",
        "--target",
        "1.22",
        "--manifests",
        m,
        "--fail-on",
        "deprecated",
    ])
    .code_is(0);
    lb.run(&[
        "preflight",
        "--no-cluster",
        "--target",
        "1.25",
        "--manifests",
        m,
    ])
    .code_is(0);
    lb.run(&[
        "preflight",
        "--no-cluster",
        "--target",
        "1.25",
        "--manifests",
        m,
        "--fail-on",
        "deprecated",
    ])
    .code_is(2);
    lb.run(&[
        "preflight",
        "--no-cluster",
        "--target",
        "1.26",
        "--manifests",
        m,
    ])
    .code_is(3);
    lb.run(&[
        "preflight",
        "--no-cluster",
        "--target",
        "1.26",
        "--manifests",
        m,
        "--fail-on",
        "none",
    ])
    .code_is(0);
    let r = lb.run(&[
        "preflight",
        "--no-cluster",
        "--target",
        "one.two",
        "--manifests",
        m,
    ]);
    r.code_is(64);
    let r = lb.run(&["preflight", "--no-cluster", "--manifests", m]);
    r.code_is(1);
    assert!(r.stderr().contains("--target"), "{}", r.describe());
    let r = lb.run(&[
        "preflight",
        "--no-cluster",
        "--target",
        "1.26",
        "--manifests",
        "/no/such/dir",
    ]);
    r.code_is(1);
    assert!(r.stderr().contains("/no/such/dir"), "{}", r.describe());
}

#[test]
fn stdin_and_api_data() {
    let lb = Lifeboat::offline();
    let extra = lb.home.path().join("cert-manager.yaml");
    std::fs::write(
        &extra,
        "apiVersion: lifeboat.io/v1\nkind: APIDeprecationList\nentries:\n  - group: cert-manager.io\n    version: v1alpha2\n    kind: Certificate\n    component: cert-manager\n    deprecatedIn: \"1.4\"\n    removedIn: \"1.6\"\n    replacement: cert-manager.io/v1\n    replacementAvailableIn: \"1.0\"\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args([
            "preflight",
            "--no-cluster",
            "--target",
            "1.30",
            "--manifests",
            "-",
            "--api-data",
            extra.to_str().unwrap(),
            "-o",
            "json",
        ])
        .env("HOME", lb.home.path())
        .env("XDG_CONFIG_HOME", lb.home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"---\n# Source: chart/templates/cert.yaml\napiVersion: cert-manager.io/v1alpha2\nkind: Certificate\nmetadata:\n  name: tls\n---\napiVersion: flowcontrol.apiserver.k8s.io/v1beta3\nkind: FlowSchema\nmetadata:\n  name: fs\n")
        .unwrap();
    let out = common::output_bounded(child, "preflight --manifests -");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = v["findings"].as_array().unwrap();
    assert_eq!(f.len(), 2, "{f:#?}");
    assert!(f.iter().all(|f| f["file"] == "(stdin)"));
    let cert = f.iter().find(|f| f["kind"] == "Certificate").unwrap();
    assert_eq!(
        (cert["line"].as_u64(), cert["replacement"].as_str()),
        (Some(2), Some("cert-manager.io/v1"))
    );
    let fs = f.iter().find(|f| f["kind"] == "FlowSchema").unwrap();
    assert_eq!(fs["line"], 8);
    assert_eq!(
        fs["severity"], "warning",
        "v1beta3 is removed in 1.32, deprecated at 1.30"
    );

    // A broken --api-data file: file:line:col, exit 1.
    std::fs::write(&extra, "apiVersion: lifeboat.io/v1\nkind: APIDeprecationList\nentries:\n  - group: x.io\n    verison: v1\n").unwrap();
    let r = lb.run(&[
        "preflight",
        "--no-cluster",
        "--target",
        "1.30",
        "--manifests",
        "-",
        "--api-data",
        extra.to_str().unwrap(),
    ]);
    r.code_is(1);
    assert!(
        r.stderr().contains(&format!("{}:5:", extra.display())),
        "{}",
        r.describe()
    );
}

#[test]
fn nothing_to_scan_is_an_error_not_a_clean_result() {
    let lb = Lifeboat::offline();
    let d = lb.home.path().join("empty");
    write(&d, "README.md", "not a manifest\n");
    let r = lb.run(&[
        "preflight",
        "--no-cluster",
        "--target",
        "1.25",
        "--manifests",
        d.to_str().unwrap(),
    ]);
    r.code_is(64);
    assert!(
        r.stderr().contains("nothing was scanned"),
        "{}",
        r.describe()
    );
    let r = lb.run(&["preflight", "--no-cluster", "--target", "1.25"]);
    r.code_is(64);
    assert!(r.stderr().contains("nothing to scan"), "{}", r.describe());
}
