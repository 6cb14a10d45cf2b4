//! `lifeboat backup cronjob`: manifests that back up in the cluster on a schedule, then apply
//! the retention policy, then (optionally) drill what was just backed up — one Job whose steps
//! are init containers, so each runs only when the one before it succeeded. The identity is
//! read-only on the cluster plus exactly what volume data and hooks need, narrowed further by a
//! ValidatingAdmissionPolicy (docs/backup.md#cronjob).

use crate::drill::cronjob::{DRILL_RULES, DRILL_SCOPE};

#[derive(Debug, Clone)]
pub struct BackupCronJobOptions {
    pub schedule: String,
    pub namespace: String,
    pub image: String,
    /// Secret holding LIFEBOAT_PASSWORD (and, for S3, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    pub secret: String,
    pub repo: String,
    pub s3_endpoint: Option<String>,
    /// Namespaces to back up (empty: the whole cluster).
    pub namespaces: Vec<String>,
    pub snapshot_volumes: bool,
    /// `--volume-mode` value when volumes are backed up.
    pub volume_mode: String,
    /// False: `--no-hooks` (no exec into application pods).
    pub hooks: bool,
    /// `backup prune` retention flags (`--keep-daily 7`, …); empty: no prune step.
    pub retention: Vec<String>,
    /// Drill the new backup after it is taken.
    pub drill: bool,
    pub drill_timeout_seconds: u64,
    pub pushgateway: Option<String>,
}

pub const SERVICE_ACCOUNT: &str = "lifeboat-backup";

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

pub fn validate(o: &BackupCronJobOptions) -> Result<(), String> {
    crate::drill::cronjob::validate(&crate::drill::cronjob::CronJobOptions {
        schedule: o.schedule.clone(),
        namespace: o.namespace.clone(),
        image: o.image.clone(),
        secret: o.secret.clone(),
        repo: o.repo.clone(),
        s3_endpoint: o.s3_endpoint.clone(),
        drill_args: vec![],
        pushgateway: None,
        timeout_seconds: o.drill_timeout_seconds.max(1),
    })
    .map_err(|e| e.replace("the drill CronJob", "the backup CronJob"))
}

/// What the identity may write, as a CEL condition over one admission request: lifeboat's own
/// temporary objects of a volume backup (labelled, named as lifeboat names them; mover pods only
/// with claim volumes, no privilege, no token), exec for hooks (or only into movers), nothing
/// else.
fn backup_scope(o: &BackupCronJobOptions) -> String {
    let exec = if o.hooks {
        // Hooks run in the application's own pods.
        "request.resource.resource == 'pods' && has(request.subResource) && request.subResource == 'exec'"
    } else if o.snapshot_volumes {
        "request.resource.resource == 'pods' && has(request.subResource) && request.subResource == 'exec' && request.name.startsWith('lifeboat-mover-')"
    } else {
        "false"
    };
    let writes = if o.snapshot_volumes {
        "(request.resource.group == 'snapshot.storage.k8s.io' && request.resource.resource == 'volumesnapshots'
         || request.resource.group == 'groupsnapshot.storage.k8s.io' && request.resource.resource == 'volumegroupsnapshots')
         && variables.managed
      || request.resource.group == '' && request.resource.resource == 'persistentvolumeclaims' && (!has(request.subResource) || request.subResource == '')
         && request.name.startsWith('lifeboat-tmp-') && variables.managed
      || request.resource.group == '' && request.resource.resource == 'pods' && (!has(request.subResource) || request.subResource == '')
         && request.name.startsWith('lifeboat-mover-') && variables.managed
         && (request.operation == 'DELETE' || variables.safePod)"
    } else {
        "false"
    };
    format!(
        "      request.operation == 'CONNECT'\n      ? request.resource.group == '' && {exec}\n      : (request.operation == 'CREATE' || request.operation == 'DELETE') && ({writes})"
    )
}

pub fn manifests(o: &BackupCronJobOptions) -> String {
    let ns = &o.namespace;
    let sa = SERVICE_ACCOUNT;
    let env_args = |sub: &[&str]| -> Vec<String> { sub.iter().map(|s| s.to_string()).collect() };
    // The steps: backup, prune (with retention), drill; all but the last are init containers.
    let mut steps: Vec<(&str, Vec<String>)> = Vec::new();
    let mut backup = env_args(&["backup", "create", "--tag", "lifeboat.io/schedule=cronjob"]);
    for n in &o.namespaces {
        backup.push("-n".into());
        backup.push(n.clone());
    }
    if o.snapshot_volumes {
        backup.extend(env_args(&["--snapshot-volumes", "--volume-mode"]));
        backup.push(o.volume_mode.clone());
    }
    if !o.hooks {
        backup.push("--no-hooks".into());
    }
    if let Some(p) = &o.pushgateway {
        backup.extend(["--pushgateway".to_string(), p.clone()]);
    }
    steps.push(("backup", backup));
    if !o.retention.is_empty() {
        let mut prune = env_args(&["backup", "prune"]);
        prune.extend(o.retention.iter().cloned());
        if let Some(p) = &o.pushgateway {
            prune.extend(["--pushgateway".to_string(), p.clone()]);
        }
        steps.push(("prune", prune));
    }
    if o.drill {
        let mut drill = env_args(&["drill", "run", "--timeout"]);
        drill.push(format!("{}s", o.drill_timeout_seconds));
        drill.extend(env_args(&["-o", "json"]));
        for n in &o.namespaces {
            drill.push("-n".into());
            drill.push(n.clone());
        }
        if let Some(p) = &o.pushgateway {
            drill.extend(["--pushgateway".to_string(), p.clone()]);
        }
        steps.push(("drill", drill));
    }
    let endpoint = o
        .s3_endpoint
        .as_ref()
        .map(|e| {
            format!(
                "\n            - name: LIFEBOAT_S3_ENDPOINT\n              value: {}",
                yaml_str(e)
            )
        })
        .unwrap_or_default();
    let container = |name: &str, args: &[String]| {
        let args: Vec<String> = args
            .iter()
            .map(|a| format!("            - {}", yaml_str(a)))
            .collect();
        format!(
            r#"          - name: {name}
            image: {image}
            args:
{args}
            env:
            - name: LIFEBOAT_REPO
              value: {repo}
            - name: HOME
              value: /tmp{endpoint}
            envFrom:
            - secretRef:
                name: {secret}
            securityContext:
              allowPrivilegeEscalation: false
              readOnlyRootFilesystem: true
              capabilities:
                drop: ["ALL"]
            resources:
              requests:
                cpu: 100m
                memory: 128Mi
              limits:
                cpu: "1"
                memory: 512Mi
            volumeMounts:
            - name: tmp
              mountPath: /tmp"#,
            image = yaml_str(&o.image),
            args = args.join("\n"),
            repo = yaml_str(&o.repo),
            secret = o.secret,
        )
    };
    let (last, first) = steps.split_last().expect("a backup step");
    let init = if first.is_empty() {
        String::new()
    } else {
        let c: Vec<String> = first.iter().map(|(n, a)| container(n, a)).collect();
        format!("          initContainers:\n{}\n", c.join("\n"))
    };
    let main = container(last.0, &last.1);
    let volume_rules = if o.snapshot_volumes {
        r#"
# Volume data: a VolumeSnapshot per claim, a temporary claim from it and a mover pod that reads
# it; the policy below allows only lifeboat's own (labelled, named lifeboat-tmp-* and
# lifeboat-mover-*, mover pods with claim volumes only, unprivileged, without a token).
- apiGroups: ["snapshot.storage.k8s.io"]
  resources: ["volumesnapshots"]
  verbs: ["create", "delete"]
- apiGroups: ["groupsnapshot.storage.k8s.io"]
  resources: ["volumegroupsnapshots"]
  verbs: ["create", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims", "pods"]
  verbs: ["create", "delete"]"#
    } else {
        ""
    };
    let exec_rules = if o.hooks || o.snapshot_volumes {
        r#"
# Hooks (pre/post/dump) run commands in the application's pods; movers are read through exec.
- apiGroups: [""]
  resources: ["pods/exec"]
  verbs: ["create", "get"]"#
    } else {
        ""
    };
    let drill_role = if o.drill {
        format!(
            r#"---
# The drill step restores the new backup into drill-* scratch namespaces (as `drill cronjob`).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: lifeboat-backup-drill
rules:
{DRILL_RULES}---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: lifeboat-backup-drill
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: lifeboat-backup-drill
subjects:
- kind: ServiceAccount
  name: {sa}
  namespace: {ns}
"#
        )
    } else {
        String::new()
    };
    let scope = if o.drill {
        format!(
            "      ({}\n      ) || (\n{DRILL_SCOPE}      )",
            backup_scope(o).trim_start()
        )
    } else {
        backup_scope(o)
    };
    let deadline = if o.drill {
        o.drill_timeout_seconds + 6 * 3600
    } else {
        6 * 3600
    };
    format!(
        r#"# lifeboat scheduled backups, generated by `lifeboat backup cronjob`.
# Before applying, create the Secret with the repository password (and S3 credentials):
#   kubectl -n {ns} create secret generic {secret} --from-literal=LIFEBOAT_PASSWORD=... \
#     --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {sa}
  namespace: {ns}
---
# A backup reads everything it backs up (Secrets included: they are part of the backup); the
# admission policy below refuses every write and connection except lifeboat's own temporary
# objects and the hooks' exec.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: lifeboat-backup
rules:
- apiGroups: ["*"]
  resources: ["*"]
  verbs: ["get", "list"]{volume_rules}{exec_rules}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: lifeboat-backup
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: lifeboat-backup
subjects:
- kind: ServiceAccount
  name: {sa}
  namespace: {ns}
{drill_role}---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: lifeboat-backup-scope
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: ["*"]
      apiVersions: ["*"]
      operations: ["CREATE", "UPDATE", "DELETE", "CONNECT"]
      resources: ["*/*"]
  matchConditions:
  - name: only-the-backup-service-account
    expression: "request.userInfo.username == 'system:serviceaccount:{ns}:{sa}'"
  variables:
  - name: obj
    expression: "request.operation == 'DELETE' ? oldObject : object"
  - name: managed
    expression: >-
      variables.obj != null && has(variables.obj.metadata) && has(variables.obj.metadata.labels) &&
      'app.kubernetes.io/managed-by' in variables.obj.metadata.labels &&
      variables.obj.metadata.labels['app.kubernetes.io/managed-by'] == 'lifeboat'
  - name: safePod
    expression: >-
      object != null && has(object.spec) && has(object.spec.volumes) &&
      object.spec.volumes.all(v, has(v.persistentVolumeClaim)) &&
      has(object.spec.automountServiceAccountToken) && object.spec.automountServiceAccountToken == false &&
      (!has(object.spec.hostNetwork) || object.spec.hostNetwork == false) &&
      (!has(object.spec.hostPID) || object.spec.hostPID == false) &&
      (!has(object.spec.hostIPC) || object.spec.hostIPC == false) &&
      !has(object.spec.initContainers) && !has(object.spec.ephemeralContainers) &&
      object.spec.containers.all(c, has(c.securityContext) &&
        c.securityContext.allowPrivilegeEscalation == false &&
        (!has(c.securityContext.privileged) || c.securityContext.privileged == false))
  validations:
  - expression: >-
{scope}
    message: "the lifeboat backup ServiceAccount may only create and delete lifeboat's own temporary snapshots, claims and mover pods, and exec for hooks"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: lifeboat-backup-scope
spec:
  policyName: lifeboat-backup-scope
  validationActions: ["Deny"]
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: lifeboat-backup
  namespace: {ns}
spec:
  schedule: {schedule}
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 5
  jobTemplate:
    spec:
      backoffLimit: 0
      activeDeadlineSeconds: {deadline}
      template:
        metadata:
          labels:
            app.kubernetes.io/name: lifeboat-backup
        spec:
          serviceAccountName: {sa}
          restartPolicy: Never
          securityContext:
            runAsNonRoot: true
            runAsUser: 65532
            runAsGroup: 65532
            seccompProfile:
              type: RuntimeDefault
{init}          containers:
{main}
          volumes:
          - name: tmp
            emptyDir:
              sizeLimit: 256Mi
"#,
        secret = o.secret,
        schedule = yaml_str(&o.schedule),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BackupCronJobOptions {
        BackupCronJobOptions {
            schedule: "30 1 * * *".into(),
            namespace: "lifeboat-system".into(),
            image: "ghcr.io/example/lifeboat:0.1.0".into(),
            secret: "lifeboat-repository".into(),
            repo: "s3://backups/prod".into(),
            s3_endpoint: Some("http://minio.example:9000".into()),
            namespaces: vec!["shop".into()],
            snapshot_volumes: true,
            volume_mode: "auto".into(),
            hooks: true,
            retention: vec!["--keep-daily".into(), "7".into()],
            drill: true,
            drill_timeout_seconds: 600,
            pushgateway: None,
        }
    }

    fn docs(m: &str) -> Vec<serde_json::Value> {
        m.split("\n---\n")
            .map(|d| {
                serde_norway::from_str::<serde_json::Value>(d)
                    .unwrap_or_else(|e| panic!("{e}\n{d}"))
            })
            .collect()
    }

    #[test]
    fn the_steps_are_init_containers_in_order_and_the_role_grows_only_with_what_is_asked() {
        let d = docs(&manifests(&opts()));
        let cj = d.iter().find(|d| d["kind"] == "CronJob").unwrap();
        let spec = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        let names = |k: &str| -> Vec<String> {
            spec[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| c["name"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(names("initContainers"), ["backup", "prune"]);
        assert_eq!(names("containers"), ["drill"]);
        let backup = &spec["initContainers"][0]["args"];
        assert!(
            backup
                .as_array()
                .unwrap()
                .contains(&"--snapshot-volumes".into())
        );
        assert!(
            d.iter()
                .any(|d| d["metadata"]["name"] == "lifeboat-backup-drill")
        );
        let policy = d
            .iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
            .unwrap();
        let expr = policy["spec"]["validations"][0]["expression"]
            .as_str()
            .unwrap();
        assert!(
            expr.contains("lifeboat-mover-") && expr.contains("drill-"),
            "{expr}"
        );

        // Manifests only, no hooks: read-only, no exec, no volume writes, one container.
        let plain = BackupCronJobOptions {
            snapshot_volumes: false,
            hooks: false,
            retention: vec![],
            drill: false,
            ..opts()
        };
        let d = docs(&manifests(&plain));
        let role = d.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
        assert_eq!(role["rules"].as_array().unwrap().len(), 1, "{role:#}");
        assert_eq!(
            role["rules"][0]["verbs"],
            serde_json::json!(["get", "list"])
        );
        let cj = d.iter().find(|d| d["kind"] == "CronJob").unwrap();
        let spec = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert!(spec["initContainers"].is_null());
        assert_eq!(spec["containers"][0]["name"], "backup");
        assert!(
            spec["containers"][0]["args"]
                .as_array()
                .unwrap()
                .contains(&"--no-hooks".into())
        );
    }

    #[test]
    fn options_are_validated() {
        assert!(validate(&opts()).is_ok());
        let e = validate(&BackupCronJobOptions {
            repo: "file:///x".into(),
            ..opts()
        })
        .unwrap_err();
        assert!(e.contains("backup CronJob"), "{e}");
    }
}
