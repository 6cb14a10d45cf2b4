//! Actions that run commands or call out: run (here), exec (in a pod), job (in the cluster),
//! http.
use super::*;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunAction {
    /// Run with `sh -c`. Write `key=value` lines to the file named by $LIFEBOAT_OUTPUT to set
    /// step outputs; stdout's last line is the output `stdout`.
    pub command: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpAction {
    pub url: String,
    #[serde(default = "get")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default = "ok200")]
    pub expect_status: u16,
    #[serde(default)]
    pub body_contains: Option<String>,
}

impl HttpAction {
    /// GET, HEAD or OPTIONS: a request that changes nothing.
    pub fn read_only(&self) -> bool {
        matches!(
            self.method.to_ascii_uppercase().as_str(),
            "GET" | "HEAD" | "OPTIONS"
        )
    }
}

fn get() -> String {
    "GET".into()
}
fn ok200() -> u16 {
    200
}

/// Kills the command's whole process group when dropped (Ctrl-C drops the step's future; a
/// timeout too): the shell and whatever it started, not the shell alone.
pub(super) struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0.take()
            && let Ok(pid) = i32::try_from(pid)
        {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// Copy one output stream of a `run` command line by line: into `keep` (bounded), the step's
/// log file and, when live, stderr; secrets redacted on the way.
pub(super) async fn pump<S: tokio::io::AsyncRead + Unpin>(
    stream: S,
    keep: &mut Vec<u8>,
    log: Option<&std::sync::Mutex<std::fs::File>>,
    live: bool,
    redactor: &Redactor,
) {
    use tokio::io::AsyncBufReadExt;
    const KEEP: usize = 1 << 20;
    let mut lines = tokio::io::BufReader::new(stream).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        if keep.len() < KEEP {
            keep.extend_from_slice(&line[..line.len().min(KEEP - keep.len())]);
            keep.push(b'\n');
        }
        let text = redactor.redact(&String::from_utf8_lossy(&line));
        if let Some(f) = log {
            use std::io::Write;
            let mut f = f.lock().expect("log file");
            let _ = writeln!(f, "{text}");
        }
        if live {
            eprintln!("    │ {text}");
        }
    }
}

pub(super) async fn run_command(ctx: &Ctx<'_>, r: &RunAction, timeout: Duration) -> R<Outcome> {
    let dir = tempfile_dir()?;
    let out_file = dir.join("output");
    std::fs::write(&out_file, b"").map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&r.command)
        .envs(&r.env)
        .env("LIFEBOAT_OUTPUT", &out_file)
        .env("LIFEBOAT_RUN_ID", ctx.run_id)
        .env("LIFEBOAT_STEP_ID", ctx.step_id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let log = step_log(ctx)?;
    let mut child = cmd.spawn().map_err(|e| format!("cannot start sh: {e}"))?;
    let mut group = GroupKill(child.id());
    let (so, se) = (
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let work = async {
        tokio::join!(
            pump(so, &mut out_buf, log.as_ref(), ctx.live, ctx.redactor),
            pump(se, &mut err_buf, log.as_ref(), ctx.live, ctx.redactor),
        );
        child.wait().await
    };
    let status = match tokio::time::timeout(timeout, work).await {
        Ok(st) => st.map_err(|e| e.to_string())?,
        Err(_) => {
            drop(group); // the whole process group
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("command timed out after {}s", timeout.as_secs()));
        }
    };
    // It finished by itself; what it left running in its group is killed too.
    drop(std::mem::replace(&mut group, GroupKill(None)));
    let output = std::process::Output {
        status,
        stdout: out_buf,
        stderr: err_buf,
    };
    let mut o = Outcome::default();
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            o.outputs.insert(k.trim().to_string(), json!(v));
        }
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let trimmed: String = stdout.trim().chars().take(4096).collect();
    o.outputs.insert("stdout".into(), json!(trimmed));
    let code = output.status.code().unwrap_or(-1);
    o.outputs.insert("exitCode".into(), json!(code));
    if !output.status.success() {
        let detail = tail(&stderr);
        let detail = if detail.is_empty() {
            tail(&stdout)
        } else {
            detail
        };
        return Err(format!(
            "command exited with status {code}{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {}", detail.replace('\n', " | "))
            }
        ));
    }
    o.summary = if trimmed.is_empty() {
        "command succeeded".into()
    } else {
        format!("command succeeded: {}", tail(&trimmed).replace('\n', " | "))
    };
    Ok(o)
}

/// The step's log (appended to by every attempt), for `runbook logs`.
pub(super) fn step_log(ctx: &Ctx<'_>) -> R<Option<std::sync::Mutex<std::fs::File>>> {
    let Some(d) = ctx.log_dir else {
        return Ok(None);
    };
    std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    let path = d.join(format!("{}.log", ctx.step_id));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    use std::io::Write;
    let _ = writeln!(
        f,
        "--- {} attempt at {}",
        ctx.step_id,
        jiff::Timestamp::now()
    );
    Ok(Some(std::sync::Mutex::new(f)))
}

/// The last lines of an output, for messages.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.trim_end().lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

pub(super) fn tempfile_dir() -> R<std::path::PathBuf> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| e.to_string())?;
    let d = std::env::temp_dir().join(format!("lifeboat-step-{}", hex::encode(b)));
    std::fs::create_dir(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    Ok(d)
}

pub(super) async fn http(h: &HttpAction, timeout: Duration) -> R<Outcome> {
    use http_body_util::BodyExt;
    crate::cluster::install_crypto_provider();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no TLS root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let mut req = http::Request::builder()
        .method(h.method.as_str())
        .uri(&h.url);
    for (k, v) in &h.headers {
        req = req.header(k, v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            h.body.clone().unwrap_or_default(),
        )))
        .map_err(|e| format!("invalid request to {}: {e}", h.url))?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| {
            format!(
                "{} {}: {}",
                h.method,
                h.url,
                crate::error::display_chain(&e)
            )
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{}: {e}", h.url))?
            .to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (status, body) = tokio::time::timeout(timeout, fut).await.map_err(|_| {
        format!(
            "{} {} timed out after {}s",
            h.method,
            h.url,
            timeout.as_secs()
        )
    })??;
    let mut o = Outcome::default();
    o.outputs.insert("status".into(), json!(status));
    o.outputs.insert(
        "body".into(),
        json!(body.chars().take(1024).collect::<String>()),
    );
    if status != h.expect_status {
        return Err(format!(
            "{} {} answered {status}, expected {}",
            h.method, h.url, h.expect_status
        ));
    }
    if let Some(want) = &h.body_contains
        && !body.contains(want.as_str())
    {
        return Err(format!(
            "{} {}: the body does not contain {want:?}",
            h.method, h.url
        ));
    }
    o.summary = format!("{} {} → {status}", h.method, h.url);
    Ok(o)
}

impl Act for RunAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::Irreversible
    }
    fn safe_to_repeat(&self) -> bool {
        false
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        Ok(format!("run: {}", ctx.redactor.redact(&self.command)))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, timeout: Duration) -> R<Outcome> {
        if ctx.dry_run {
            return Ok(Outcome {
                summary: format!("would run: {}", ctx.redactor.redact(&self.command)),
                ..Default::default()
            });
        }
        run_command(ctx, self, timeout).await
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("run")
    }
}

impl Act for HttpAction {
    fn reversibility(&self) -> Reversibility {
        // GET and HEAD only read; POST, PUT, PATCH and DELETE change something elsewhere that
        // lifeboat cannot undo (say `undo: skip` for a notification).
        if self.read_only() {
            Reversibility::ReadOnly
        } else {
            Reversibility::Irreversible
        }
    }
    fn safe_to_repeat(&self) -> bool {
        self.read_only()
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(format!(
            "{} {} (expect {})",
            self.method, self.url, self.expect_status
        ))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, timeout: Duration) -> R<Outcome> {
        if ctx.dry_run && !self.read_only() {
            return Ok(Outcome {
                summary: format!("would send {} {}", self.method, self.url),
                ..Default::default()
            });
        }
        http(self, timeout).await
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("http")
    }
}

/// `exec`: run a command in a pod's container through the API server (kubectl exec). The pod is
/// named, or the first Running pod a label selector matches. Outputs `stdout` and `exitCode`;
/// a non-zero exit fails the step.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecAction {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The command and its arguments (no shell unless you name one: `[sh, -c, "..."]`).
    pub command: Vec<String>,
}

impl ExecAction {
    async fn pod(&self, ctx: &Ctx<'_>) -> R<String> {
        if let Some(p) = &self.pod {
            return Ok(p.clone());
        }
        let sel = self.selector.as_deref().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(ctx.cluster.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(sel))
            .await
            .map_err(|e| format!("pods {sel} in {}: {}", self.namespace, kerr(e)))?;
        list.items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .and_then(|p| p.metadata.name.clone())
            .ok_or_else(|| format!("no running pod in {} matches {sel}", self.namespace))
    }
}

/// The exit code in an exec's final status (0: success; None: not reported).
fn exec_exit_code(st: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status) -> Option<i32> {
    if st.status.as_deref() == Some("Success") {
        return Some(0);
    }
    st.details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref()?.parse().ok())
}

impl Act for ExecAction {
    fn validate(&self) -> R<()> {
        if self.pod.is_some() == self.selector.is_some() {
            return Err("exec needs exactly one of `pod` and `selector`".into());
        }
        if self.command.is_empty() {
            return Err("exec needs a `command` (a list: [program, args...])".into());
        }
        Ok(())
    }
    fn reversibility(&self) -> Reversibility {
        Reversibility::Irreversible
    }
    fn safe_to_repeat(&self) -> bool {
        false
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        let pod = match &self.pod {
            Some(p) => p.clone(),
            None => format!(
                "a running pod matching {}",
                self.selector.as_deref().unwrap_or_default()
            ),
        };
        Ok(format!(
            "exec in {}/{pod}{}: {}",
            self.namespace,
            self.container
                .as_ref()
                .map(|c| format!(" container {c}"))
                .unwrap_or_default(),
            ctx.redactor.redact(&self.command.join(" "))
        ))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, timeout: Duration) -> R<Outcome> {
        use kube::api::AttachParams;
        let pod = self.pod(ctx).await?;
        if ctx.dry_run {
            return Ok(Outcome {
                summary: format!(
                    "would exec in {}/{pod}: {}",
                    self.namespace,
                    ctx.redactor.redact(&self.command.join(" "))
                ),
                ..Default::default()
            });
        }
        let pods: Api<Pod> = Api::namespaced(ctx.cluster.client.clone(), &self.namespace);
        let mut ap = AttachParams::default()
            .stdin(false)
            .stdout(true)
            .stderr(true);
        if let Some(c) = &self.container {
            ap = ap.container(c);
        }
        let log = step_log(ctx)?;
        let what = format!("pod {}/{pod}", self.namespace);
        let work = async {
            let mut proc = pods
                .exec(&pod, self.command.clone(), &ap)
                .await
                .map_err(|e| format!("cannot exec in {what}: {}", kerr(e)))?;
            let (so, se) = (proc.stdout(), proc.stderr());
            let status = proc.take_status();
            let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
            let pump_out = async {
                if let Some(s) = so {
                    pump(s, &mut out_buf, log.as_ref(), ctx.live, ctx.redactor).await;
                }
            };
            let pump_err = async {
                if let Some(s) = se {
                    pump(s, &mut err_buf, log.as_ref(), ctx.live, ctx.redactor).await;
                }
            };
            tokio::join!(pump_out, pump_err);
            let st = match status {
                Some(s) => s.await,
                None => None,
            };
            let _ = proc.join().await;
            Ok::<_, String>((st, out_buf, err_buf))
        };
        let (st, out_buf, err_buf) = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("exec in {what} timed out after {}s", timeout.as_secs()))??;
        let stdout = String::from_utf8_lossy(&out_buf);
        let stderr = String::from_utf8_lossy(&err_buf);
        let code = st.as_ref().and_then(exec_exit_code);
        let mut o = Outcome::default();
        let trimmed: String = stdout.trim().chars().take(4096).collect();
        o.outputs
            .insert("stdout".into(), json!(ctx.redactor.redact(&trimmed)));
        o.outputs.insert("exitCode".into(), json!(code));
        if code != Some(0) {
            let detail = if stderr.trim().is_empty() {
                tail(&stdout)
            } else {
                tail(&stderr)
            };
            let why = match (code, st.as_ref().and_then(|s| s.message.clone())) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(m)) => format!("failed: {m}"),
                (None, None) => "ended without reporting an exit status".into(),
            };
            return Err(format!(
                "command in {what} {why}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", ctx.redactor.redact(&detail).replace('\n', " | "))
                }
            ));
        }
        o.summary = format!("command in {what} succeeded");
        Ok(o)
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("exec")
    }
}

/// `job`: run a Job to completion and keep its logs. The Job's name is fixed per execution
/// (`<name>-<hash>`, default `lifeboat-job-<hash>`, the hash of run, step and
/// [`Ctx::instance`]), so a resumed run finds the Job it started instead of starting a second
/// one (safe to repeat), while a retry, a run after a rollback or an undo gets a Job of its own. `spec` is a Job spec (`template`, `backoffLimit`, ...);
/// `restartPolicy` defaults to Never and `backoffLimit` to 0.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobAction {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub spec: Value,
}

impl JobAction {
    /// The Job of this execution of the step ([`Ctx::instance`]): the same for a resumed
    /// crashed attempt, another for a retry, a run after a rollback, or an undo.
    fn job_name(&self, ctx: &Ctx<'_>) -> String {
        let h =
            blake3::hash(format!("{}\0{}\0{}", ctx.run_id, ctx.step_id, ctx.instance).as_bytes());
        match &self.name {
            Some(n) => {
                let mut n = n.clone();
                n.truncate(63 - 9);
                format!("{}-{}", n.trim_end_matches('-'), &h.to_hex()[..8])
            }
            None => format!("lifeboat-job-{}", &h.to_hex()[..16]),
        }
    }

    fn manifest(&self, ctx: &Ctx<'_>, name: &str) -> R<k8s_openapi::api::batch::v1::Job> {
        let mut spec = self.spec.clone();
        if !spec.is_object()
            || !spec["template"].is_object()
            || !spec["template"]["spec"].is_object()
        {
            return Err("job.spec must be a Job spec with template.spec (after rendering)".into());
        }
        if spec.pointer("/template/spec/restartPolicy").is_none() {
            spec["template"]["spec"]["restartPolicy"] = json!("Never");
        }
        if spec.get("backoffLimit").is_none() {
            spec["backoffLimit"] = json!(0);
        }
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "lifeboat"},
                "annotations": {"lifeboat.io/run": ctx.run_id, "lifeboat.io/step": ctx.step_id,
                    "lifeboat.io/instance": ctx.instance}},
            "spec": spec,
        }))
        .map_err(|e| format!("job.spec is not a valid Job spec: {e}"))
    }
}

impl Act for JobAction {
    fn validate(&self) -> R<()> {
        if self.spec.pointer("/template/spec/containers").is_none()
            && !crate::runbook::template::is_template(&self.spec.to_string())
        {
            return Err("job.spec needs template.spec.containers".into());
        }
        Ok(())
    }
    fn reversibility(&self) -> Reversibility {
        Reversibility::Irreversible
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(1800)
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        let name = self.job_name(ctx);
        let images: Vec<String> = self
            .spec
            .pointer("/template/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["image"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(format!(
            "run Job {}/{name} ({}) to completion",
            self.namespace,
            images.join(", ")
        ))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, timeout: Duration) -> R<Outcome> {
        use k8s_openapi::api::batch::v1::Job;
        let name = self.job_name(ctx);
        let what = format!("Job {}/{name}", self.namespace);
        let job = self.manifest(ctx, &name)?;
        let jobs: Api<Job> = Api::namespaced(ctx.cluster.client.clone(), &self.namespace);
        let pp = PostParams {
            dry_run: ctx.dry_run,
            ..Default::default()
        };
        match jobs.create(&pp, &job).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(409) => {
                // Ours from an earlier attempt of this step (a resume): wait for it. Anyone
                // else's: refuse rather than report its outcome as ours.
                let cur = jobs
                    .get(&name)
                    .await
                    .map_err(|e| format!("{what}: {}", kerr(e)))?;
                let ann = cur.metadata.annotations.unwrap_or_default();
                if ann.get("lifeboat.io/run").map(String::as_str) != Some(ctx.run_id)
                    || ann.get("lifeboat.io/step").map(String::as_str) != Some(ctx.step_id)
                    || ann.get("lifeboat.io/instance").map(String::as_str)
                        != Some(ctx.instance.as_str())
                {
                    return Err(format!(
                        "{what} already exists and was not started by this step; name another with `name`"
                    ));
                }
            }
            Err(e) => return Err(format!("cannot create {what}: {}", kerr(e))),
        }
        if ctx.dry_run {
            return Ok(Outcome {
                summary: format!("would run {what} (server dry-run)"),
                ..Default::default()
            });
        }
        let deadline = Instant::now() + timeout;
        let (ok, msg) = loop {
            match jobs.get(&name).await {
                Ok(j) => {
                    let conds = j
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.clone())
                        .unwrap_or_default();
                    let has = |t: &str| conds.iter().find(|c| c.type_ == t && c.status == "True");
                    if let Some(c) = has("Complete").or_else(|| has("SuccessCriteriaMet")) {
                        break (true, c.message.clone().unwrap_or_default());
                    }
                    if let Some(c) = has("Failed").or_else(|| has("FailureTarget")) {
                        break (
                            false,
                            format!(
                                "{}{}",
                                c.reason.clone().unwrap_or_default(),
                                c.message
                                    .as_ref()
                                    .map(|m| format!(": {m}"))
                                    .unwrap_or_default()
                            ),
                        );
                    }
                }
                Err(e) if transient(&e) => {}
                Err(e) => return Err(format!("{what}: {}", kerr(e))),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what} did not finish within {}s (it keeps running; a resume waits for it again)",
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        // The logs of its newest pod: into the step log and the `logs` output.
        let pods: Api<Pod> = Api::namespaced(ctx.cluster.client.clone(), &self.namespace);
        let mut logs = String::new();
        if let Ok(list) = pods
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
            .await
            && let Some(p) = list
                .items
                .iter()
                .max_by_key(|p| p.metadata.creation_timestamp.clone())
            && let Some(pn) = &p.metadata.name
        {
            logs = pods.logs(pn, &Default::default()).await.unwrap_or_default();
        }
        let logs = ctx.redactor.redact(&logs);
        if let Some(f) = step_log(ctx)? {
            use std::io::Write;
            let mut f = f.lock().expect("log file");
            let _ = f.write_all(logs.as_bytes());
        }
        if ctx.live {
            for l in logs.lines() {
                eprintln!("    │ {l}");
            }
        }
        let mut o = Outcome::default();
        let trimmed: String = logs.trim().chars().take(4096).collect();
        o.outputs.insert("logs".into(), json!(trimmed));
        o.outputs.insert("job".into(), json!(name));
        if !ok {
            return Err(format!("{what} failed ({msg}){}", {
                let t = tail(&logs);
                if t.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.replace('\n', " | "))
                }
            }));
        }
        o.summary = format!("{what} completed");
        Ok(o)
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("job")
    }
}
