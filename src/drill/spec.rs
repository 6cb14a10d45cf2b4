//! Drill specs (YAML, docs/drill.md): budgets and checks beyond the always-on ones. Unknown
//! fields are rejected; errors name file:line:col.
use std::path::Path;

use kube::api::{Api, DynamicObject, GroupVersionKind};
use serde::Deserialize;
use serde_json::Value;

use super::{CheckResult, NamespaceMapping, Status, check};
use crate::error::Error;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DrillSpec {
    pub api_version: String,
    pub kind: String,
    /// Fail when the workloads are not ready this many seconds after the restore started.
    #[serde(default)]
    pub rto_seconds: Option<f64>,
    /// Fail when the backup is older than this.
    #[serde(default)]
    pub rpo_hours: Option<f64>,
    #[serde(default)]
    pub assertions: Vec<Assertion>,
    #[serde(default)]
    pub http: Vec<HttpCheck>,
    #[serde(default)]
    pub commands: Vec<CommandCheck>,
    /// Claims (and claim templates) of storage class OLD are restored with class NEW, as
    /// `restore --storage-class-map`.
    #[serde(default)]
    pub storage_class_map: std::collections::BTreeMap<String, String>,
    /// Restore transform files (docs/restore.md#transforms), relative to this spec.
    #[serde(default)]
    pub transforms: Vec<String>,
    /// The rules of `transforms`, loaded by [`parse`].
    #[serde(skip)]
    pub loaded_transforms: Option<std::sync::Arc<crate::restore::transform::Transforms>>,
}

/// A JSONPath-style assertion on a restored object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Assertion {
    pub name: String,
    /// Namespace in the backup (the drill maps it to its scratch namespace).
    pub namespace: String,
    pub api_version: String,
    pub kind: String,
    pub object: String,
    /// `.spec.replicas`, `.spec.containers[0].image`, `.metadata.labels['app.kubernetes.io/name']`
    pub path: String,
    /// Expected value (compared as a string); without it the path must exist.
    #[serde(default)]
    pub equals: Option<String>,
}

/// An HTTP GET through the API server's service proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCheck {
    pub name: String,
    pub namespace: String,
    pub service: String,
    pub port: u16,
    #[serde(default = "root")]
    pub path: String,
    #[serde(default = "ok")]
    pub expect_status: u16,
    #[serde(default)]
    pub body_contains: Option<String>,
}

/// How long one HTTP or command check may take.
pub const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

fn root() -> String {
    "/".into()
}
fn ok() -> u16 {
    200
}

/// A command run in a pod of a restored workload (exec through the API server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommandCheck {
    pub name: String,
    pub namespace: String,
    /// Label selector of the pods to pick one from (e.g. `app=db`).
    pub selector: String,
    #[serde(default)]
    pub container: Option<String>,
    pub command: Vec<String>,
}

pub fn parse(path: &Path, text: &str) -> Result<DrillSpec, Error> {
    let mut spec: DrillSpec = crate::yaml::parse(path, text)?;
    if spec.api_version != "lifeboat.io/v1" || spec.kind != "DrillSpec" {
        return Err(Error::DataFile {
            path: path.to_owned(),
            location: "1:1".into(),
            message: format!(
                "expected apiVersion lifeboat.io/v1 and kind DrillSpec, got {} {}",
                spec.api_version, spec.kind
            ),
        });
    }
    let mut all: Option<crate::restore::transform::Transforms> = None;
    for (i, t) in spec.transforms.iter().enumerate() {
        let file = path.parent().unwrap_or(Path::new(".")).join(t);
        if !file.is_file() {
            return Err(Error::DataFile {
                path: path.to_owned(),
                location: crate::yaml::locate(
                    text,
                    &[
                        crate::yaml::PathElem::Key("transforms".into()),
                        crate::yaml::PathElem::Index(i),
                    ],
                ),
                message: format!("transform file {} does not exist", file.display()),
            });
        }
        let loaded = crate::restore::transform::Transforms::load(&file)?;
        match &mut all {
            Some(a) => a.extend(loaded),
            None => all = Some(loaded),
        }
    }
    spec.loaded_transforms = all.map(std::sync::Arc::new);
    Ok(spec)
}

pub fn load(path: &Path) -> Result<DrillSpec, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Evaluate a small JSONPath subset: `.a.b`, `[0]`, `['key.with.dots']`.
pub fn json_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    let mut rest = path.trim().trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']")?;
            cur = cur.get(&r[..end])?;
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            cur = cur.get(r[..end].trim().parse::<usize>().ok()?)?;
            rest = &r[end + 1..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            rest = &r[end..];
        } else {
            return None;
        }
    }
    Some(cur)
}

fn scratch_of<'a>(mapping: &'a [NamespaceMapping], ns: &str) -> Option<&'a str> {
    mapping
        .iter()
        .find(|m| m.source == ns)
        .map(|m| m.scratch.as_str())
}

pub async fn run_assertions(
    client: &kube::Client,
    spec: &DrillSpec,
    mapping: &[NamespaceMapping],
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for a in &spec.assertions {
        let Some(ns) = scratch_of(mapping, &a.namespace) else {
            out.push(check(
                &a.name,
                None,
                Status::Fail,
                format!("namespace {} is not part of this drill", a.namespace),
            ));
            continue;
        };
        let (group, version) = a
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", &a.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &a.kind);
        let result = async {
            let (ar, _) = kube::discovery::pinned_kind(client, &gvk)
                .await
                .map_err(|e| crate::error::display_chain(&e))?;
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let obj = api
                .get(&a.object)
                .await
                .map_err(|e| crate::error::display_chain(&e))?;
            Ok::<Value, String>(serde_json::to_value(obj).expect("serializes"))
        }
        .await;
        let res = match result {
            Err(e) => check(
                &a.name,
                Some(ns),
                Status::Fail,
                format!("{} {}: {e}", a.kind, a.object),
            ),
            Ok(obj) => match (json_path(&obj, &a.path), &a.equals) {
                (None, _) => check(
                    &a.name,
                    Some(ns),
                    Status::Fail,
                    format!("{} {}: {} does not exist", a.kind, a.object, a.path),
                ),
                (Some(_), None) => check(
                    &a.name,
                    Some(ns),
                    Status::Pass,
                    format!("{} {}: {} exists", a.kind, a.object, a.path),
                ),
                (Some(v), Some(want)) => {
                    let got = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    if &got == want {
                        check(
                            &a.name,
                            Some(ns),
                            Status::Pass,
                            format!("{} {}: {} = {got}", a.kind, a.object, a.path),
                        )
                    } else {
                        check(
                            &a.name,
                            Some(ns),
                            Status::Fail,
                            format!(
                                "{} {}: {} is {got}, expected {want}",
                                a.kind, a.object, a.path
                            ),
                        )
                    }
                }
            },
        };
        out.push(res);
    }
    for h in &spec.http {
        let Some(ns) = scratch_of(mapping, &h.namespace) else {
            out.push(check(
                &h.name,
                None,
                Status::Fail,
                format!("namespace {} is not part of this drill", h.namespace),
            ));
            continue;
        };
        let path = format!(
            "/api/v1/namespaces/{ns}/services/{}:{}/proxy{}",
            h.service,
            h.port,
            if h.path.starts_with('/') {
                h.path.clone()
            } else {
                format!("/{}", h.path)
            }
        );
        let req = http::Request::get(&path)
            .body(Vec::new())
            .expect("valid request");
        let answer = tokio::time::timeout(CHECK_TIMEOUT, async {
            let resp = client.send(req.map(kube::client::Body::from)).await?;
            let status = resp.status().as_u16();
            Ok::<_, kube::Error>((status, http_body_util_collect(resp).await))
        })
        .await;
        let res = match answer {
            Err(_) => check(
                &h.name,
                Some(ns),
                Status::Fail,
                format!(
                    "GET {}:{}{}: no answer within {}s",
                    h.service,
                    h.port,
                    h.path,
                    CHECK_TIMEOUT.as_secs()
                ),
            ),
            Ok(Err(e)) => check(
                &h.name,
                Some(ns),
                Status::Fail,
                format!(
                    "GET {}:{}{}: {}",
                    h.service,
                    h.port,
                    h.path,
                    crate::error::display_chain(&e)
                ),
            ),
            Ok(Ok((status, body))) => {
                let contains_ok = h
                    .body_contains
                    .as_ref()
                    .is_none_or(|want| body.contains(want.as_str()));
                if status == h.expect_status && contains_ok {
                    check(
                        &h.name,
                        Some(ns),
                        Status::Pass,
                        format!("GET {}:{}{} → {status}", h.service, h.port, h.path),
                    )
                } else if status != h.expect_status {
                    let snippet: String = body
                        .chars()
                        .take(200)
                        .collect::<String>()
                        .replace('\n', " ");
                    check(
                        &h.name,
                        Some(ns),
                        Status::Fail,
                        format!(
                            "GET {}:{}{} → {status}, expected {}: {}",
                            h.service,
                            h.port,
                            h.path,
                            h.expect_status,
                            snippet.trim()
                        ),
                    )
                } else {
                    check(
                        &h.name,
                        Some(ns),
                        Status::Fail,
                        format!(
                            "GET {}:{}{}: body does not contain {:?}",
                            h.service,
                            h.port,
                            h.path,
                            h.body_contains.clone().unwrap_or_default()
                        ),
                    )
                }
            }
        };
        out.push(res);
    }
    for c in &spec.commands {
        // Exec needs a real kubelet behind the pod; where the cluster cannot exec (simulated
        // nodes) the check is recorded as not run, never as passed.
        let Some(ns) = scratch_of(mapping, &c.namespace) else {
            out.push(check(
                &c.name,
                None,
                Status::Fail,
                format!("namespace {} is not part of this drill", c.namespace),
            ));
            continue;
        };
        out.push(super::report::exec_check(client, ns, c).await);
    }
    out
}

async fn http_body_util_collect(resp: http::Response<kube::client::Body>) -> String {
    use http_body_util::BodyExt;
    match resp.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let v = serde_json::json!({"spec": {"replicas": 2, "containers": [{"image": "nginx:1"}]}, "metadata": {"labels": {"app.kubernetes.io/name": "web"}}});
        assert_eq!(json_path(&v, ".spec.replicas"), Some(&serde_json::json!(2)));
        assert_eq!(
            json_path(&v, "$.spec.containers[0].image").and_then(Value::as_str),
            Some("nginx:1")
        );
        assert_eq!(
            json_path(&v, ".metadata.labels['app.kubernetes.io/name']").and_then(Value::as_str),
            Some("web")
        );
        assert!(json_path(&v, ".spec.missing").is_none());
        assert!(json_path(&v, ".spec.containers[3]").is_none());
    }

    #[test]
    fn specs_reject_unknown_fields_with_location() {
        let text = "apiVersion: lifeboat.io/v1\nkind: DrillSpec\nrtoSeconds: 300\nassertions:\n  - name: a\n    namespace: shop\n    apiVersion: apps/v1\n    kind: Deployment\n    object: web\n    path: .spec.replicas\n    equal: \"2\"\n";
        let err = parse(Path::new("drill.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("drill.yaml:11:"), "{err}");
        assert!(err.contains("equal"), "{err}");
        let good = text.replace("equal:", "equals:");
        let s = parse(Path::new("drill.yaml"), &good).unwrap();
        assert_eq!(s.rto_seconds, Some(300.0));
        assert_eq!(s.assertions[0].equals.as_deref(), Some("2"));
    }
}
