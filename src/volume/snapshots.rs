//! Backing up PVC contents: a CSI VolumeSnapshot of each claim, a temporary claim restored from
//! it, a mover pod reading that claim, the tar stream into the repository. Every temporary
//! object is recorded in a [`Cleanup`] as it is created and removed at the end — on success,
//! failure and Ctrl-C.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use serde::Serialize;
use serde_json::{Value, json};

use super::mover::{self, Direction, MoverOptions, RunAs};
use super::{Counters, VolumeError};
use crate::repo::snapshot::VolumeRecord;
use crate::repo::{Packer, Repository};

pub const DEFAULT_CLASS_ANNOTATION: &str = "snapshot.storage.kubernetes.io/is-default-class";
pub const DEFAULT_GROUP_CLASS_ANNOTATION: &str =
    "groupsnapshot.storage.kubernetes.io/is-default-class";

fn group_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "groupsnapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "groupsnapshot.storage.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub fn group_snapshot_resource() -> ApiResource {
    group_resource("VolumeGroupSnapshot", "volumegroupsnapshots")
}

pub fn snapshot_resource() -> ApiResource {
    ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: "VolumeSnapshot".into(),
        plural: "volumesnapshots".into(),
    }
}

pub fn snapshot_class_resource() -> ApiResource {
    ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: "VolumeSnapshotClass".into(),
        plural: "volumesnapshotclasses".into(),
    }
}

#[derive(Debug, Clone)]
pub struct VolumeOptions {
    /// `--snapshot-class`; default: the default VolumeSnapshotClass of the claim's driver.
    pub snapshot_class: Option<String>,
    pub keep_snapshots: bool,
    pub snapshot_timeout: Duration,
    pub mover: MoverOptions,
    pub cleanup: Cleanup,
    pub counters: Arc<Counters>,
    /// Per-volume progress on stderr (off with -q).
    pub progress: bool,
    /// `--volume-mode`: how a claim's data is read.
    pub mode: VolumeMode,
}

/// How a claim's data is read (`--volume-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeMode {
    /// A CSI VolumeSnapshot, read through a temporary claim (claims that cannot be snapshotted
    /// are skipped with a warning).
    #[default]
    Snapshot,
    /// The claim itself, read-only, by a mover on the node that has it mounted, between the
    /// pre and post hooks: consistency comes from the hooks.
    Live,
    /// Snapshot where a VolumeSnapshotClass exists for the claim's driver, live otherwise.
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temp {
    Pod,
    Claim,
    Snapshot,
    GroupSnapshot,
}

/// Temporary objects to delete, newest last.
///
/// Names are chosen here, not by the apiserver (`generateName`), and recorded *before* the
/// create request: a Ctrl-C that cancels a create in flight still leaves its name behind for
/// [`Cleanup::run`] (deleting a name that was never created is not an error).
#[derive(Debug, Clone, Default)]
pub struct Cleanup(
    Arc<Mutex<Vec<(Temp, String, String)>>>,
    /// Also recorded here (the whole backup's list, which Ctrl-C empties).
    Option<Arc<Cleanup>>,
);

impl Cleanup {
    pub fn add(&self, kind: Temp, ns: &str, name: &str) {
        self.0
            .lock()
            .expect("cleanup")
            .push((kind, ns.to_string(), name.to_string()));
        if let Some(p) = &self.1 {
            p.add(kind, ns, name);
        }
    }

    /// A list of its own (one claim's objects, deleted when that claim is done) whose entries
    /// are also recorded in this one (for Ctrl-C). Deleting twice is harmless.
    pub fn child(&self) -> Cleanup {
        Cleanup(Default::default(), Some(Arc::new(self.clone())))
    }

    /// A new name `prefix` + 5 random characters (as `generateName` would make), recorded.
    pub fn name(&self, kind: Temp, ns: &str, prefix: &str) -> String {
        let name = temp_name(prefix);
        self.add(kind, ns, &name);
        name
    }

    /// Delete everything recorded (newest first). Returns what could not be deleted.
    pub async fn run(&self, client: &kube::Client) -> Vec<String> {
        let items: Vec<(Temp, String, String)> =
            std::mem::take(&mut *self.0.lock().expect("cleanup"));
        let mut failed = Vec::new();
        for (kind, ns, name) in items.into_iter().rev() {
            if let Err(e) = delete(client, kind, &ns, &name).await {
                failed.push(format!("{kind:?} {ns}/{name}: {e}"));
            }
        }
        failed
    }
}

/// Delete one temporary object (gone already: fine).
pub async fn delete_temp(
    client: &kube::Client,
    kind: Temp,
    ns: &str,
    name: &str,
) -> Result<(), String> {
    delete(client, kind, ns, name).await
}

async fn delete(client: &kube::Client, kind: Temp, ns: &str, name: &str) -> Result<(), String> {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let r = match kind {
        Temp::Pod => Api::<Pod>::namespaced(client.clone(), ns)
            .delete(name, &dp)
            .await
            .map(|_| ()),
        Temp::Claim => Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .delete(name, &dp)
            .await
            .map(|_| ()),
        Temp::Snapshot => {
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &snapshot_resource())
                .delete(name, &dp)
                .await
                .map(|_| ())
        }
        Temp::GroupSnapshot => {
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &group_snapshot_resource())
                .delete(name, &dp)
                .await
                .map(|_| ())
        }
    };
    match r {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(crate::error::display_chain(&e)),
    }
}

fn kerr(what: String) -> impl FnOnce(kube::Error) -> VolumeError {
    move |e| VolumeError::Pipeline(format!("{what}: {}", crate::error::display_chain(&e)))
}

/// The claims to back up: bound PVCs in `namespaces` (all when empty) matching `selector`.
pub async fn claims(
    client: &kube::Client,
    namespaces: &[String],
    selector: Option<&str>,
) -> Result<Vec<PersistentVolumeClaim>, VolumeError> {
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let mut out = Vec::new();
    let lists: Vec<Api<PersistentVolumeClaim>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|n| Api::namespaced(client.clone(), n))
            .collect()
    };
    for api in lists {
        out.extend(
            api.list(&lp)
                .await
                .map_err(kerr("list PersistentVolumeClaims".into()))?
                .items
                .into_iter()
                .filter(|c| {
                    c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                        && !c
                            .metadata
                            .labels
                            .as_ref()
                            .is_some_and(|l| l.contains_key(mover::LABEL))
                        && !c
                            .metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with("lifeboat-tmp-"))
                }),
        );
    }
    Ok(out)
}

/// The CSI driver of a claim (its StorageClass's provisioner) and the snapshot class to use.
/// `Ok(None)` with a reason: the claim cannot be snapshotted (reported and skipped).
async fn classes(
    client: &kube::Client,
    pvc: &PersistentVolumeClaim,
    opts: &VolumeOptions,
) -> Result<Result<(String, String), String>, VolumeError> {
    let Some(sc) = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone()) else {
        return Ok(Err(
            "has no storage class, so no CSI driver to snapshot it".into()
        ));
    };
    let driver = match Api::<StorageClass>::all(client.clone()).get_opt(&sc).await {
        Ok(Some(c)) => c.provisioner,
        Ok(None) => return Ok(Err(format!("its StorageClass {sc} does not exist"))),
        Err(e) => return Err(kerr(format!("read StorageClass {sc}"))(e)),
    };
    let vscs: Api<DynamicObject> = Api::all_with(client.clone(), &snapshot_class_resource());
    let list = match vscs.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Ok(Err(
                "the cluster has no VolumeSnapshot API (snapshot.storage.k8s.io/v1)".into(),
            ));
        }
        Err(e) => return Err(kerr("list VolumeSnapshotClasses".into())(e)),
    };
    let drv = |o: &DynamicObject| o.data["driver"].as_str().unwrap_or_default().to_string();
    if let Some(want) = &opts.snapshot_class {
        return Ok(
            match list
                .iter()
                .find(|o| o.metadata.name.as_deref() == Some(want))
            {
                None => Err(format!("VolumeSnapshotClass {want} does not exist")),
                Some(o) if drv(o) != driver => Err(format!(
                    "VolumeSnapshotClass {want} is for driver {}, the claim's is {driver}",
                    drv(o)
                )),
                Some(_) => Ok((driver, want.clone())),
            },
        );
    }
    let default = list.iter().find(|o| {
        drv(o) == driver
            && o.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .map(String::as_str)
                == Some("true")
    });
    Ok(match default {
        Some(o) => Ok((driver, o.metadata.name.clone().unwrap_or_default())),
        None => Err(format!(
            "no default VolumeSnapshotClass for its driver {driver} (give one with --snapshot-class)"
        )),
    })
}

async fn wait_ready(
    client: &kube::Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<Value, VolumeError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &snapshot_resource());
    let deadline = Instant::now() + timeout;
    loop {
        let s = api
            .get(name)
            .await
            .map_err(kerr(format!("read VolumeSnapshot {ns}/{name}")))?;
        let status = &s.data["status"];
        if let Some(msg) = status["error"]["message"].as_str() {
            return Err(VolumeError::Pipeline(format!(
                "VolumeSnapshot {ns}/{name} failed: {msg}"
            )));
        }
        if status["readyToUse"] == true {
            return Ok(status.clone());
        }
        if Instant::now() > deadline {
            return Err(VolumeError::Pipeline(format!(
                "VolumeSnapshot {ns}/{name} was not ready to use after {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The non-root identity the workload using claim `pvc` runs as, from the pods that mount it
/// (a running one preferred). Root when a mounting container runs as root or does not say
/// (the image's own USER is not visible through the API), or when no pod mounts the claim.
pub async fn consumer_identity(client: &kube::Client, ns: &str, pvc: &str) -> RunAs {
    let Ok(pods) = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    else {
        return RunAs::Root;
    };
    let running = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph == "Running")
    };
    let mut mounting: Vec<&Pod> = pods
        .items
        .iter()
        .filter(|p| identity_in_pod(p, pvc).is_some())
        .collect();
    mounting.sort_by_key(|p| !running(p));
    mounting
        .first()
        .and_then(|p| identity_in_pod(p, pvc))
        .unwrap_or_default()
}

/// `None` when `pod` does not mount claim `pvc`; otherwise the identity every container that
/// mounts it shares (root when one runs as root, does not say, or they differ).
pub fn identity_in_pod(pod: &Pod, pvc: &str) -> Option<RunAs> {
    let spec = pod.spec.as_ref()?;
    let volume = spec.volumes.as_ref()?.iter().find(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == pvc)
    })?;
    let psc = spec.security_context.clone().unwrap_or_default();
    let mut ids = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == volume.name)
        })
        .map(|c| {
            let csc = c.security_context.clone().unwrap_or_default();
            (
                csc.run_as_user.or(psc.run_as_user),
                csc.run_as_group.or(psc.run_as_group),
            )
        });
    let first = ids.next();
    let same = ids.all(|i| Some(i) == first);
    Some(match first {
        Some((Some(uid), gid)) if uid != 0 && same => RunAs::User {
            uid,
            gid,
            fs_group: psc.fs_group,
            supplemental_groups: psc.supplemental_groups.unwrap_or_default(),
        },
        _ => RunAs::Root,
    })
}

/// A claim whose VolumeSnapshot was asked for (not yet ready).
pub struct Requested {
    pub namespace: String,
    pub name: String,
    pub snapshot: String,
    driver: String,
    class: String,
    capacity: String,
    spec: k8s_openapi::api::core::v1::PersistentVolumeClaimSpec,
    /// This claim's temporary objects.
    cleanup: Cleanup,
    /// The VolumeGroupSnapshot the snapshot is a member of.
    pub group: Option<String>,
}

/// A ready snapshot: when the storage took it (`status.creationTime`, the storage's clock as
/// the snapshot controller reports it) and its restore size.
pub struct Ready {
    pub time: Option<String>,
    status: Value,
}

/// Ask for a claim's VolumeSnapshot (phase 1 of a backup's volume data: every claim's is asked
/// for together, between the pre and post hooks). `Ok(Err(why))`: this claim cannot be
/// snapshotted (a warning of the backup).
pub async fn request_snapshot(
    client: &kube::Client,
    pvc: &PersistentVolumeClaim,
    opts: &VolumeOptions,
) -> Result<Result<Requested, String>, VolumeError> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let (driver, class) = match classes(client, pvc, opts).await? {
        Ok(c) => c,
        Err(why) => return Ok(Err(format!("PVC {ns}/{name} not backed up: {why}"))),
    };
    let spec = pvc.spec.clone().unwrap_or_default();
    let capacity = pvc
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .or_else(|| {
            spec.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
        })
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let cleanup = opts.cleanup.child();
    let snaps: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &snapshot_resource());
    let prefix = format!("lifeboat-{}-", short(&name));
    let snap_name = if opts.keep_snapshots {
        temp_name(&prefix)
    } else {
        cleanup.name(Temp::Snapshot, &ns, &prefix)
    };
    let snap: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": snap_name, "namespace": ns,
                     "labels": {"app.kubernetes.io/managed-by": "lifeboat"},
                     "annotations": {"lifeboat.io/pvc": name}},
        "spec": {"volumeSnapshotClassName": class, "source": {"persistentVolumeClaimName": name}}
    }))
    .expect("a valid VolumeSnapshot");
    snaps
        .create(&PostParams::default(), &snap)
        .await
        .map_err(kerr(format!("create a VolumeSnapshot of {ns}/{name}")))?;
    Ok(Ok(Requested {
        namespace: ns,
        name,
        snapshot: snap_name,
        driver,
        class,
        capacity,
        spec,
        cleanup,
        group: None,
    }))
}

/// The claims of one namespace and driver snapshotted as one VolumeGroupSnapshot, when the
/// cluster serves `groupsnapshot.storage.k8s.io/v1`, the driver has a default
/// VolumeGroupSnapshotClass and the group's selector (the backup's label selector, lifeboat's
/// own claims excluded) picks exactly `claims`. Waits until the group is ready, then returns one
/// [`Requested`] per claim (its member VolumeSnapshot) and the group's name (deleted by the
/// caller once every member's data is moved; recorded in `opts.cleanup` for failures).
/// `Ok(Err(why))`: not possible here; the caller snapshots the claims one by one.
pub async fn request_group(
    client: &kube::Client,
    ns: &str,
    claims: &[&PersistentVolumeClaim],
    selector: Option<&str>,
    opts: &VolumeOptions,
) -> Result<Result<(Vec<Requested>, String), String>, VolumeError> {
    let Some(first) = claims.first() else {
        return Ok(Err("no claims".into()));
    };
    let (driver, class) = match classes(client, first, opts).await? {
        Ok(c) => c,
        Err(why) => return Ok(Err(why)),
    };
    for c in &claims[1..] {
        match classes(client, c, opts).await? {
            Ok((d, _)) if d == driver => {}
            _ => return Ok(Err("the claims are not all of one CSI driver".into())),
        }
    }
    let gclasses: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &group_resource("VolumeGroupSnapshotClass", "volumegroupsnapshotclasses"),
    );
    let list = match gclasses.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Ok(Err("the cluster serves no VolumeGroupSnapshot API".into()));
        }
        Err(e) => return Err(kerr("list VolumeGroupSnapshotClasses".into())(e)),
    };
    let Some(gclass) = list.iter().find(|o| {
        o.data["driver"].as_str() == Some(driver.as_str())
            && o.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_GROUP_CLASS_ANNOTATION))
                .map(String::as_str)
                == Some("true")
    }) else {
        return Ok(Err(format!(
            "no default VolumeGroupSnapshotClass for driver {driver}"
        )));
    };
    let gclass = gclass.metadata.name.clone().unwrap_or_default();
    // The group's selector must pick exactly these claims (all bound, all of this driver).
    let mut terms: Vec<String> = selector.map(|s| vec![s.to_string()]).unwrap_or_default();
    terms.push(format!("!{}", mover::LABEL));
    let sel = terms.join(",");
    let picked = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&sel))
        .await
        .map_err(kerr(format!("list PersistentVolumeClaims in {ns}")))?;
    let mut want: Vec<String> = claims
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let mut got: Vec<String> = picked
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    want.sort();
    got.sort();
    if want != got {
        return Ok(Err(format!(
            "a group's selector would pick other claims too ({})",
            got.iter()
                .filter(|g| !want.contains(g))
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (match_labels, expressions) = crate::selector::Selector::parse(&sel)
        .map_err(|e| VolumeError::Pipeline(format!("label selector {sel:?}: {e}")))?
        .to_label_selector();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &group_snapshot_resource());
    let name = if opts.keep_snapshots {
        temp_name("lifeboat-group-")
    } else {
        opts.cleanup
            .name(Temp::GroupSnapshot, ns, "lifeboat-group-")
    };
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1", "kind": "VolumeGroupSnapshot",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"app.kubernetes.io/managed-by": "lifeboat"}},
        "spec": {"volumeGroupSnapshotClassName": gclass, "source": {"selector": {}}}
    }))
    .expect("a valid VolumeGroupSnapshot");
    // Empty lists and maps are left out: the selector is immutable, and a controller's update
    // that drops an empty field would count as a change (and fail forever).
    let mut obj = obj;
    if match_labels.as_object().is_some_and(|m| !m.is_empty()) {
        obj.data["spec"]["source"]["selector"]["matchLabels"] = match_labels;
    }
    if expressions.as_array().is_some_and(|a| !a.is_empty()) {
        obj.data["spec"]["source"]["selector"]["matchExpressions"] = expressions;
    }
    api.create(&PostParams::default(), &obj)
        .await
        .map_err(kerr(format!("create a VolumeGroupSnapshot in {ns}")))?;
    let deadline = Instant::now() + opts.snapshot_timeout;
    let uid = loop {
        let g = api
            .get(&name)
            .await
            .map_err(kerr(format!("read VolumeGroupSnapshot {ns}/{name}")))?;
        if let Some(msg) = g.data["status"]["error"]["message"].as_str() {
            delete(client, Temp::GroupSnapshot, ns, &name).await.ok();
            return Ok(Err(format!(
                "VolumeGroupSnapshot {ns}/{name} failed: {msg}"
            )));
        }
        if g.data["status"]["readyToUse"] == true {
            break g.metadata.uid.unwrap_or_default();
        }
        if Instant::now() > deadline {
            delete(client, Temp::GroupSnapshot, ns, &name).await.ok();
            return Ok(Err(format!(
                "VolumeGroupSnapshot {ns}/{name} was not ready after {}s",
                opts.snapshot_timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Its members: the VolumeSnapshots it owns, each naming its claim.
    let members = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &snapshot_resource())
        .list(&ListParams::default())
        .await
        .map_err(kerr(format!("list VolumeSnapshots in {ns}")))?;
    let mut out = Vec::new();
    for c in claims {
        let pvc = c.metadata.name.clone().unwrap_or_default();
        let member = members.items.iter().find(|s| {
            s.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid)
                && s.data["spec"]["source"]["persistentVolumeClaimName"].as_str() == Some(&pvc)
        });
        let Some(member) = member else {
            delete(client, Temp::GroupSnapshot, ns, &name).await.ok();
            return Ok(Err(format!(
                "VolumeGroupSnapshot {ns}/{name} has no member for claim {pvc}"
            )));
        };
        out.push(Requested {
            namespace: ns.to_string(),
            name: pvc,
            snapshot: member.metadata.name.clone().unwrap_or_default(),
            driver: driver.clone(),
            class: class.clone(),
            capacity: capacity_of(c),
            spec: c.spec.clone().unwrap_or_default(),
            // The member goes with its group, not on its own.
            cleanup: opts.cleanup.child(),
            group: Some(name.clone()),
        });
    }
    Ok(Ok((out, name)))
}

fn capacity_of(pvc: &PersistentVolumeClaim) -> String {
    pvc.status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .or_else(|| {
            pvc.spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
        })
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into())
}

/// Wait until a requested snapshot is ready to use.
pub async fn wait_snapshot(
    client: &kube::Client,
    r: &Requested,
    opts: &VolumeOptions,
) -> Result<Ready, VolumeError> {
    let status = wait_ready(client, &r.namespace, &r.snapshot, opts.snapshot_timeout).await?;
    Ok(Ready {
        time: status["creationTime"].as_str().map(str::to_string),
        status,
    })
}

/// Delete a claim's temporary objects (its snapshot unless kept, temporary claim, mover pod).
pub async fn release(client: &kube::Client, r: &Requested) {
    let failed = r.cleanup.run(client).await;
    if !failed.is_empty() {
        tracing::warn!(?failed, "temporary objects left behind");
    }
}

/// Read a claim live (`--volume-mode live|auto`): a read-only mover mounting the claim itself,
/// on the node of a running pod that mounts it (a claim mounted nowhere is read wherever the
/// scheduler puts the mover). Called between the pre and post hooks. Returns the record and
/// the pods that mount the claim. `Ok(Err(why))`: this claim could not be read (a warning).
pub async fn read_live(
    client: &kube::Client,
    repo: Arc<Repository>,
    packer: Arc<Packer>,
    pvc: &PersistentVolumeClaim,
    opts: &VolumeOptions,
    workers: usize,
) -> Result<Result<(VolumeRecord, Vec<String>), String>, VolumeError> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let spec = pvc.spec.clone().unwrap_or_default();
    let users = mounting_pods(client, &ns, &name).await;
    let node = users
        .iter()
        .find_map(|p| p.spec.as_ref()?.node_name.clone());
    let user_names: Vec<String> = users
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let cleanup = opts.cleanup.child();
    let run_as = consumer_identity(client, &ns, &name).await;
    let read = |run_as: RunAs| {
        let mover_opts = MoverOptions {
            run_as,
            node: node.clone(),
            ..opts.mover.clone()
        };
        let (repo, packer, ns, name, cleanup) = (
            repo.clone(),
            packer.clone(),
            ns.clone(),
            name.clone(),
            cleanup.clone(),
        );
        async move {
            let pod =
                mover::start(client, &ns, &name, Direction::Backup, &mover_opts, &cleanup).await?;
            let r = mover::backup(
                client,
                &ns,
                &pod,
                repo,
                packer,
                workers,
                opts.counters.clone(),
            )
            .await;
            mover::stop(client, &ns, &pod).await;
            r
        }
    };
    let result = match read(run_as.clone()).await {
        Err(e) if run_as != RunAs::Root && !matches!(e, VolumeError::Repo(_)) => {
            read(RunAs::Root).await
        }
        r => r,
    };
    for f in cleanup.run(client).await {
        tracing::warn!("could not delete {f}");
    }
    let driver = match &spec.storage_class_name {
        Some(sc) => Api::<StorageClass>::all(client.clone())
            .get_opt(sc)
            .await
            .ok()
            .flatten()
            .map(|c| c.provisioner)
            .unwrap_or_default(),
        None => String::new(),
    };
    match result {
        Ok((entries, stats)) => {
            let trees = super::store_tree(&packer, &entries).await?;
            let capacity = pvc
                .status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage"))
                .map(|q| q.0.clone())
                .unwrap_or_else(|| "1Gi".into());
            Ok(Ok((
                VolumeRecord {
                    namespace: ns,
                    pvc: name,
                    storage_class: spec.storage_class_name.clone(),
                    capacity,
                    driver,
                    snapshot_class: String::new(),
                    snapshot: String::new(),
                    snapshot_kept: false,
                    files: stats.files,
                    bytes: stats.bytes,
                    trees,
                    mode: Some("live".into()),
                },
                user_names,
            )))
        }
        Err(e @ VolumeError::Repo(_)) => Err(e),
        Err(e) => Ok(Err(format!(
            "PVC {ns}/{name} not backed up (live read): {e}"
        ))),
    }
}

/// The running pods (not lifeboat's movers) that mount claim `pvc`.
async fn mounting_pods(client: &kube::Client, ns: &str, pvc: &str) -> Vec<Pod> {
    let Ok(pods) = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    else {
        return vec![];
    };
    pods.items
        .into_iter()
        .filter(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && !p
                    .metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(mover::LABEL))
                && p.spec.as_ref().is_some_and(|s| {
                    s.volumes.iter().flatten().any(|v| {
                        v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| c.claim_name == pvc)
                    })
                })
        })
        .collect()
}

/// Whether a claim can be snapshotted: `Ok(())`, or why not.
pub async fn snapshottable(
    client: &kube::Client,
    pvc: &PersistentVolumeClaim,
    opts: &VolumeOptions,
) -> Result<Result<(), String>, VolumeError> {
    Ok(classes(client, pvc, opts).await?.map(|_| ()))
}

/// Phase 3: move a ready snapshot's data into the repository (a claim made from the snapshot,
/// read by a mover pod), then delete the claim's temporary objects. `Ok(Err(why))`: this
/// claim's data could not be read (a warning); `Err`: the repository failed (the backup does).
pub async fn move_claim(
    client: &kube::Client,
    repo: Arc<Repository>,
    packer: Arc<Packer>,
    r: &Requested,
    ready: &Ready,
    opts: &VolumeOptions,
    workers: usize,
) -> Result<Result<VolumeRecord, String>, VolumeError> {
    let (ns, name, spec, snap_name) = (&r.namespace, &r.name, &r.spec, &r.snapshot);
    let opts = &VolumeOptions {
        cleanup: r.cleanup.clone(),
        ..opts.clone()
    };
    let status = &ready.status;
    let capacity = r.capacity.clone();
    let result = async {
        let size = status["restoreSize"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| capacity.clone());
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let tmp_name = opts.cleanup.name(
            Temp::Claim,
            ns,
            &format!("lifeboat-tmp-{}-", short(name)),
        );
        let tmp: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": tmp_name, "namespace": ns,
                         "labels": {"app.kubernetes.io/managed-by": "lifeboat", mover::LABEL: "true"}},
            "spec": {"storageClassName": spec.storage_class_name,
                     "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                     "volumeMode": spec.volume_mode,
                     "resources": {"requests": {"storage": size}},
                     "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                    "name": snap_name}}
        }))
        .expect("a valid PVC");
        claims
            .create(&PostParams::default(), &tmp)
            .await
            .map_err(kerr(format!("create a claim from VolumeSnapshot {ns}/{snap_name}")))?;
        let read = |run_as: RunAs| {
            let mover_opts = MoverOptions {
                run_as,
                ..opts.mover.clone()
            };
            let (repo, packer, tmp_name) = (repo.clone(), packer.clone(), tmp_name.clone());
            let ns = ns.clone();
            async move {
                let pod = mover::start(
                    client,
                    &ns,
                    &tmp_name,
                    Direction::Backup,
                    &mover_opts,
                    &opts.cleanup,
                )
                .await?;
                let r = mover::backup(
                    client,
                    &ns,
                    &pod,
                    repo,
                    packer,
                    workers,
                    opts.counters.clone(),
                )
                .await;
                mover::stop(client, &ns, &pod).await;
                r
            }
        };
        // Read as the workload's own non-root user when it has one; a file that user cannot
        // read (written by a root init container, say) needs the root reader.
        let run_as = consumer_identity(client, ns, name).await;
        let (entries, stats) = match read(run_as.clone()).await {
            // Only a failure to *read the volume* is worth a second try as root; a repository
            // error fails the whole backup (the packer is poisoned by then anyway).
            Err(e) if run_as != RunAs::Root && !matches!(e, VolumeError::Repo(_)) => {
                let uid = match &run_as {
                    RunAs::User { uid, .. } => *uid,
                    RunAs::Root => 0,
                };
                if opts.progress {
                    eprintln!(
                        "{ns}/{name}: reading as the workload's user {uid} failed ({e}); reading as root"
                    );
                }
                tracing::warn!(pvc = %name, uid, error = %e, "non-root read failed; retrying as root");
                read(RunAs::Root).await?
            }
            r => r?,
        };
        let trees = super::store_tree(&packer, &entries).await?;
        Ok::<_, VolumeError>(VolumeRecord {
            namespace: ns.clone(),
            pvc: name.clone(),
            storage_class: spec.storage_class_name.clone(),
            capacity: capacity.clone(),
            driver: r.driver.clone(),
            snapshot_class: r.class.clone(),
            snapshot: snap_name.clone(),
            snapshot_kept: opts.keep_snapshots,
            files: stats.files,
            bytes: stats.bytes,
            trees,
            mode: None,
        })
    }
    .await;
    release(client, r).await;
    match result {
        Ok(r) => Ok(Ok(r)),
        // The repository failed: not a per-claim problem, the backup as a whole must fail.
        Err(e @ VolumeError::Repo(_)) => Err(e),
        Err(e) => Ok(Err(format!("PVC {ns}/{name} not backed up: {e}"))),
    }
}

/// `prefix` followed by 5 characters from the alphabet the apiserver uses for `generateName`.
pub fn temp_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = [0u8; 5];
    getrandom::getrandom(&mut b).expect("system random source");
    let suffix: String = b
        .iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

fn short(name: &str) -> String {
    name.chars()
        .take(40)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}
