//! The runbook file format (`apiVersion: lifeboat.io/v1`, `kind: Runbook`, docs/runbooks.md).
//!
//! Parsing is strict: unknown fields and unknown actions are rejected by serde with the
//! line:column of the offending key; the checks that need the whole document (duplicate ids,
//! `rollbackTo` targets, durations, template syntax, parameter references) report the
//! line:column of the node they are about, found with a span-keeping YAML parser.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;

pub use super::actions::{
    ACTIONS, Action, ApplyAction, ApproveAction, Approvers, AssertAction, BackupAction,
    CordonAction, DeleteAction, DrainAction, DrillAction, ExecAction, GetAction, HttpAction,
    JobAction, ListAction, ObjectRef, PatchAction, PatchType, PreflightAction, RestoreAction,
    Reversibility, RolloutRestartAction, RolloutUndoAction, RunAction, ScaleAction, SetImageAction,
    SleepAction, UncordonAction, WaitAction, WaitNodeVersionAction, WaitWorkloadsAction,
};

pub const API_VERSION: &str = "lifeboat.io/v1";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Runbook {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    pub steps: Vec<Entry>,
    /// Steps that run after the main steps whatever happened (success, failure, rollback).
    #[serde(default)]
    pub finally: Vec<Step>,
    /// Webhooks told about the run: awaiting approval, failure, rollback, finished, each
    /// forEach item (docs/notifications.md). `url` may be a template (`{{ env("HOOK") }}`).
    #[serde(default)]
    pub notify: Vec<crate::notify::Target>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Int,
    Number,
    Bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    #[serde(rename = "type", default = "string_type")]
    pub ty: ParamType,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub description: Option<String>,
}

fn string_type() -> ParamType {
    ParamType::String
}

impl Param {
    /// Convert a `--set` string or a YAML default into this parameter's type.
    pub fn coerce(&self, v: &Value) -> Result<Value, String> {
        let s = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match self.ty {
            ParamType::String => Ok(Value::String(match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })),
            ParamType::Int => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("{s:?} is not an integer")),
            ParamType::Number => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("{s:?} is not a number")),
            ParamType::Bool => match s.trim() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(format!("{s:?} is not true or false")),
            },
        }
    }
}

/// A whole number written literally or as a template that renders to one.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum IntOrTemplate {
    Int(i64),
    Template(String),
}

impl IntOrTemplate {
    /// The value after rendering.
    pub fn get(&self) -> Result<i64, String> {
        match self {
            IntOrTemplate::Int(i) => Ok(*i),
            IntOrTemplate::Template(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a whole number")),
        }
    }
}

/// How a step is undone when a rollback passes it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Undo {
    /// Restore the state recorded before the step ran (scale, setImage, patch, apply, cordon,
    /// uncordon, drain).
    Auto,
    /// Irreversible: a rollback stops here unless `--force` is given.
    None,
    /// Nothing to undo (the step changed nothing); a rollback passes it.
    Skip,
    /// Run this action to undo the step.
    Action(Box<Action>),
}

impl<'de> Deserialize<'de> for Undo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Undo;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`auto`, `none`, `skip` or an action such as `scale: {...}`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Undo, E> {
                match s {
                    "auto" => Ok(Undo::Auto),
                    "none" => Ok(Undo::None),
                    "skip" => Ok(Undo::Skip),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Undo, A::Error> {
                let a = Action::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Undo::Action(Box::new(a)))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Wait between attempts (doubles after each failure).
    #[serde(default = "default_backoff")]
    pub backoff: String,
}

fn default_backoff() -> String {
    "5s".into()
}

/// An entry of `steps`: a step, or a group of steps repeated for each item of a list.
#[derive(Debug, Clone)]
pub enum Entry {
    Step(Step),
    Group(Group),
}

/// `forEach`: the group's steps run once per item (all of them for the first item, then for
/// the next), with `item` in their templates. Expanded ids are `GROUP-ITEM-STEP`.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub description: Option<String>,
    /// A list, or a template rendering to a list or a comma/space separated string (expanded
    /// when planning); or `{items: TEMPLATE}` / `{selector: …}`, resolved at run time.
    pub for_each: Value,
    pub steps: Vec<Step>,
    /// Items handled together: each step runs for every item of a batch before the next step
    /// (so at most this many items are part-way through the group at once). Default 1.
    pub batch_size: Option<usize>,
    /// Items that may fail before the run does: a failed item's remaining steps are skipped
    /// (what it did is left as it is) and the run goes on with the next item; one failure more
    /// fails the run as usual (rollback). Default 0.
    pub max_failures: Option<usize>,
    /// The run-time form of `forEach`: a `list` step with the group's id finds the items when
    /// the run reaches it, and the group is expanded from its output.
    pub runtime: Option<super::actions::ListAction>,
}

/// One step: common fields plus exactly one action.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub description: Option<String>,
    pub timeout: Option<String>,
    pub retry: Option<Retry>,
    pub when: Option<String>,
    pub undo: Option<Undo>,
    pub checkpoint: bool,
    pub rollback_to: Option<String>,
    pub action: Action,
    /// Template variables of an expanded group step (`item`).
    pub vars: BTreeMap<String, Value>,
    /// For an expanded group step: its group and item (the id prefix `<group>-<item>-`).
    pub group_item: Option<String>,
    /// For an expanded group step: its group's id and `maxFailures`.
    pub group_id: Option<String>,
    pub max_failures: Option<usize>,
}

const STEP_FIELDS: &[&str] = &[
    "id",
    "description",
    "timeout",
    "retry",
    "when",
    "undo",
    "checkpoint",
    "rollbackTo",
    "forEach",
    "batchSize",
    "maxUnavailable",
    "maxFailures",
    "steps",
];

impl Step {
    /// The undo in effect: the step's own or the action's default.
    pub fn effective_undo(&self) -> Undo {
        match &self.undo {
            Some(u) => u.clone(),
            None => match self.action.reversibility() {
                Reversibility::Auto => Undo::Auto,
                Reversibility::ReadOnly => Undo::Skip,
                Reversibility::Irreversible => Undo::None,
            },
        }
    }
}

struct EntryVisitor {
    allow_group: bool,
}

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = Entry;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a step: id, optional fields and exactly one action")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
        let mut id = None;
        let mut description = None;
        let mut timeout = None;
        let mut retry = None;
        let mut when = None;
        let mut undo = None;
        let mut checkpoint = false;
        let mut rollback_to = None;
        let mut action: Option<Action> = None;
        let mut for_each: Option<Value> = None;
        let mut group: Option<Vec<Step>> = None;
        let mut batch_size: Option<usize> = None;
        let mut max_failures: Option<usize> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "id" => id = Some(map.next_value::<String>()?),
                "description" => description = Some(map.next_value::<String>()?),
                "timeout" => timeout = Some(map.next_value::<String>()?),
                "retry" => retry = Some(map.next_value::<Retry>()?),
                "when" => when = Some(map.next_value::<String>()?),
                "undo" => undo = Some(map.next_value::<Undo>()?),
                "checkpoint" => checkpoint = map.next_value::<bool>()?,
                "rollbackTo" => rollback_to = Some(map.next_value::<String>()?),
                "forEach" | "steps" | "batchSize" | "maxUnavailable" | "maxFailures"
                    if !self.allow_group =>
                {
                    return Err(de::Error::custom(format!(
                        "`{key}`: groups (forEach) are only allowed directly under `steps`"
                    )));
                }
                "forEach" => for_each = Some(map.next_value::<Value>()?),
                // The same thing said the way Deployments and node pools say it.
                "batchSize" | "maxUnavailable" => {
                    if batch_size.is_some() {
                        return Err(de::Error::custom(
                            "give one of `batchSize` and `maxUnavailable` (they are the same)",
                        ));
                    }
                    batch_size = Some(map.next_value::<usize>()?)
                }
                "maxFailures" => max_failures = Some(map.next_value::<usize>()?),
                "steps" => group = Some(map.next_value::<Vec<Step>>()?),
                other => match Action::parse_field(other, &mut map) {
                    Some(parsed) => {
                        if let Some(prev) = &action {
                            return Err(de::Error::custom(format!(
                                "a step has exactly one action, this one has `{}` and `{}`",
                                prev.name(),
                                key
                            )));
                        }
                        action = Some(parsed?);
                    }
                    None => {
                        return Err(de::Error::custom(format!(
                            "unknown step field or action `{other}` (fields: {}; actions: {})",
                            STEP_FIELDS.join(", "),
                            ACTIONS.join(", ")
                        )));
                    }
                },
            }
        }
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        if (batch_size.is_some() || max_failures.is_some()) && for_each.is_none() {
            return Err(de::Error::custom(format!(
                "step `{id}`: batchSize, maxUnavailable and maxFailures are for groups (with forEach and steps)"
            )));
        }
        if for_each.is_some() || group.is_some() {
            let (Some(for_each), Some(steps)) = (for_each, group) else {
                return Err(de::Error::custom(format!(
                    "group `{id}` needs both `forEach` and `steps`"
                )));
            };
            if action.is_some()
                || timeout.is_some()
                || retry.is_some()
                || when.is_some()
                || undo.is_some()
                || checkpoint
                || rollback_to.is_some()
            {
                return Err(de::Error::custom(format!(
                    "group `{id}` has only id, description, forEach, batchSize, maxFailures and steps; put actions and step fields on its steps"
                )));
            }
            if steps.is_empty() {
                return Err(de::Error::custom(format!("group `{id}` has no steps")));
            }
            if batch_size == Some(0) {
                return Err(de::Error::custom(format!(
                    "group `{id}`: batchSize must be at least 1"
                )));
            }
            let runtime = match &for_each {
                Value::Object(m) if m.contains_key("items") || m.contains_key("selector") => Some(
                    super::actions::ListAction::deserialize(for_each.clone())
                        .map_err(|e| de::Error::custom(format!("forEach: {e}")))?,
                ),
                _ => None,
            };
            return Ok(Entry::Group(Group {
                id,
                description,
                for_each,
                steps,
                batch_size,
                max_failures,
                runtime,
            }));
        }
        let action = action.ok_or_else(|| {
            de::Error::custom(format!(
                "step `{id}` has no action (one of: {})",
                ACTIONS.join(", ")
            ))
        })?;
        Ok(Entry::Step(Step {
            id,
            description,
            timeout,
            retry,
            when,
            undo,
            checkpoint,
            rollback_to,
            action,
            vars: BTreeMap::new(),
            group_item: None,
            group_id: None,
            max_failures: None,
        }))
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntryVisitor { allow_group: true })
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_map(EntryVisitor { allow_group: false })? {
            Entry::Step(s) => Ok(s),
            Entry::Group(_) => unreachable!("groups are rejected by the visitor"),
        }
    }
}

pub use crate::yaml::{PathElem, locate};

fn key(s: &str) -> PathElem {
    PathElem::Key(s.into())
}

/// A runbook with where it came from (for error locations and relative files).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: std::path::PathBuf,
    pub text: String,
    pub runbook: Runbook,
    /// The main steps with groups expanded (see [`Loaded::expand`]); before expansion, each
    /// group appears once with the placeholder item `ITEM`.
    pub steps: Vec<Step>,
}

impl Loaded {
    pub fn error_at(&self, path: &[PathElem], message: impl Into<String>) -> Error {
        Error::DataFile {
            path: self.path.clone(),
            location: locate(&self.text, path),
            message: message.into(),
        }
    }

    /// Every step as written (group steps included), main steps first, with the YAML path of
    /// each and its group.
    pub fn all_steps(&self) -> Vec<(Vec<PathElem>, &Step, Option<&Group>)> {
        let mut out = Vec::new();
        for (i, e) in self.runbook.steps.iter().enumerate() {
            match e {
                Entry::Step(s) => out.push((vec![key("steps"), PathElem::Index(i)], s, None)),
                Entry::Group(g) => {
                    for (j, s) in g.steps.iter().enumerate() {
                        out.push((
                            vec![
                                key("steps"),
                                PathElem::Index(i),
                                key("steps"),
                                PathElem::Index(j),
                            ],
                            s,
                            Some(g),
                        ));
                    }
                }
            }
        }
        for (i, s) in self.runbook.finally.iter().enumerate() {
            out.push((vec![key("finally"), PathElem::Index(i)], s, None));
        }
        out
    }

    /// Expand the groups for these parameter values.
    pub fn expand(&mut self, params: &BTreeMap<String, Value>) -> Result<(), Error> {
        let engine = super::template::Engine::new();
        let ctx = serde_json::json!({"params": params});
        let mut out = Vec::new();
        for (i, e) in self.runbook.steps.iter().enumerate() {
            match e {
                Entry::Step(s) => out.push(s.clone()),
                Entry::Group(g) if g.runtime.is_some() => out.push(runtime_placeholder(g)),
                Entry::Group(g) => {
                    let at = [key("steps"), PathElem::Index(i), key("forEach")];
                    let items = engine
                        .render_value(&g.for_each, &ctx)
                        .map_err(|e| self.error_at(&at, format!("forEach: {e}")))?;
                    let items = list_items(&items);
                    if items.is_empty() {
                        return Err(self
                            .error_at(&at, format!("forEach of group {} is an empty list", g.id)));
                    }
                    out.extend(expand_group(g, &items));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for s in &out {
            if !seen.insert(s.id.clone()) {
                return Err(Error::Runbook(format!(
                    "{}: expanding the groups gives the step id {} twice (forEach has the same item twice?)",
                    self.path.display(),
                    s.id
                )));
            }
        }
        self.steps = out;
        Ok(())
    }
}

/// The step that stands for a run-time group until the run reaches it: a `list` step with the
/// group's id, whose output `items` the group is expanded from.
fn runtime_placeholder(g: &Group) -> Step {
    Step {
        id: g.id.clone(),
        description: Some(
            g.description
                .clone()
                .unwrap_or_else(|| format!("find the items of group {}", g.id)),
        ),
        timeout: None,
        retry: None,
        when: None,
        undo: None,
        checkpoint: false,
        rollback_to: None,
        action: Action::List(g.runtime.clone().expect("a run-time group")),
        vars: BTreeMap::new(),
        group_item: None,
        group_id: None,
        max_failures: None,
    }
}

/// The steps of a run as far as it got: the planned steps, with each run-time group expanded
/// right after its `list` step from that step's output `items` (`outputs_of`: a step's
/// outputs, from this process or the journal). Before its `list` step ran, a run-time group
/// is only that step.
pub fn expand_runtime<'a>(
    loaded: &Loaded,
    outputs_of: impl Fn(&str) -> Option<&'a BTreeMap<String, Value>>,
) -> Vec<Step> {
    let mut out = Vec::new();
    for s in &loaded.steps {
        out.push(s.clone());
        if !matches!(s.action, Action::List(_)) {
            continue;
        }
        let group = loaded.runbook.steps.iter().find_map(|e| match e {
            Entry::Group(g) if g.id == s.id && g.runtime.is_some() => Some(g),
            _ => None,
        });
        if let (Some(g), Some(items)) = (group, outputs_of(&s.id).and_then(|o| o.get("items"))) {
            out.extend(expand_group(g, &list_items(items)));
        }
    }
    out
}

/// Items of a rendered `forEach`: a list, or a string split on commas and whitespace.
pub fn list_items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::String(s) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|x| !x.is_empty())
            .map(|x| Value::String(x.to_string()))
            .collect(),
        Value::Null => vec![],
        other => vec![other.clone()],
    }
}

/// A forEach item as messages show it.
pub fn item_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The part of an expanded step id an item gives (`GROUP-<this>-STEP`).
pub fn id_part(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A group's steps for each item: item by item, or with `batchSize: N` step by step across
/// each batch of N items (every item of the batch drained before any is upgraded, say).
fn expand_group(g: &Group, items: &[Value]) -> Vec<Step> {
    let inner: BTreeSet<&str> = g.steps.iter().map(|s| s.id.as_str()).collect();
    let one = |item: &Value, s: &Step| {
        let prefix = format!("{}-{}-", g.id, id_part(item));
        let mut e = s.clone();
        e.id = format!("{prefix}{}", s.id);
        if let Some(t) = &s.rollback_to
            && inner.contains(t.as_str())
        {
            e.rollback_to = Some(format!("{prefix}{t}"));
        }
        e.vars.insert("item".into(), item.clone());
        e.group_item = Some(prefix);
        e.group_id = Some(g.id.clone());
        e.max_failures = g.max_failures;
        e
    };
    let mut out = Vec::new();
    for batch in items.chunks(g.batch_size.unwrap_or(1).max(1)) {
        for s in &g.steps {
            for item in batch {
                out.push(one(item, s));
            }
        }
    }
    out
}

fn with(path: &[PathElem], more: &[&str]) -> Vec<PathElem> {
    let mut p = path.to_vec();
    p.extend(more.iter().map(|k| key(k)));
    p
}

/// Parse and check a runbook. Errors are `file:line:col: message`.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, Error> {
    let runbook: Runbook = crate::yaml::parse(path, text)?;
    let mut loaded = Loaded {
        path: path.to_owned(),
        text: text.to_owned(),
        runbook,
        steps: vec![],
    };
    check(&loaded)?;
    loaded.steps = loaded
        .runbook
        .steps
        .iter()
        .flat_map(|e| match e {
            Entry::Step(s) => vec![s.clone()],
            Entry::Group(g) => expand_group(g, &[Value::String("ITEM".into())]),
        })
        .collect();
    Ok(loaded)
}

pub fn load(path: &Path) -> Result<Loaded, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// "90s", "10m", "1h30m" is not accepted; "1.5h" is.
pub fn duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s)
}

fn check(l: &Loaded) -> Result<(), Error> {
    let rb = &l.runbook;
    if rb.api_version != API_VERSION {
        return Err(l.error_at(
            &[key("apiVersion")],
            format!("apiVersion must be {API_VERSION}, not {:?}", rb.api_version),
        ));
    }
    if rb.kind != "Runbook" {
        return Err(l.error_at(
            &[key("kind")],
            format!("kind must be Runbook, not {:?}", rb.kind),
        ));
    }
    for (i, n) in rb.notify.iter().enumerate() {
        for (k, e) in n.events.iter().enumerate() {
            if !crate::notify::RUNBOOK_EVENTS.contains(&e.as_str()) {
                return Err(l.error_at(
                    &[
                        key("notify"),
                        PathElem::Index(i),
                        key("events"),
                        PathElem::Index(k),
                    ],
                    format!(
                        "unknown event {e:?} (events: {})",
                        crate::notify::RUNBOOK_EVENTS.join(", ")
                    ),
                ));
            }
        }
    }
    if rb.steps.is_empty() {
        return Err(l.error_at(&[key("steps")], "a runbook needs at least one step"));
    }
    for (name, p) in &rb.params {
        let at = [key("params"), key(name)];
        if !is_identifier(name) {
            return Err(l.error_at(
                &at,
                format!("parameter name {name:?} must be letters, digits and _ (templates use params.{name})"),
            ));
        }
        if let Some(d) = &p.default {
            p.coerce(d).map_err(|e| {
                l.error_at(
                    &[key("params"), key(name), key("default")],
                    format!("default of parameter {name}: {e}"),
                )
            })?;
        }
    }
    // Ids are scoped: a group's steps are "GROUP/STEP" here (expanded to GROUP-ITEM-STEP).
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut checkpoints: BTreeSet<String> = BTreeSet::new();
    let env = super::template::Engine::new();
    for (i, e) in rb.steps.iter().enumerate() {
        if let Entry::Group(g) = e {
            let at = [key("steps"), PathElem::Index(i)];
            if seen.insert(g.id.clone(), usize::MAX).is_some() {
                return Err(
                    l.error_at(&with(&at, &["id"]), format!("duplicate step id {:?}", g.id))
                );
            }
            if let Some(rt) = &g.runtime {
                if let Err(e) = super::actions::Act::validate(rt) {
                    return Err(l.error_at(&with(&at, &["forEach"]), format!("forEach: {e}")));
                }
                // Run time: it may use the outputs of steps before the group.
                let earlier: BTreeSet<&str> = rb.steps[..i]
                    .iter()
                    .map(|e| match e {
                        Entry::Step(s) => s.id.as_str(),
                        Entry::Group(g) => g.id.as_str(),
                    })
                    .collect();
                let mut strings = Vec::new();
                collect_strings(&g.for_each, &mut strings);
                for s in strings {
                    let refs = env
                        .check_template(&s)
                        .map_err(|e| l.error_at(&with(&at, &["forEach"]), e))?;
                    if let Some(p) = refs.params.iter().find(|p| !rb.params.contains_key(*p)) {
                        return Err(l.error_at(
                            &with(&at, &["forEach"]),
                            format!("forEach uses params.{p}, which is not declared under params"),
                        ));
                    }
                    if let Some(s) = refs.steps.iter().find(|s| !earlier.contains(s.as_str())) {
                        return Err(l.error_at(
                            &with(&at, &["forEach"]),
                            format!("forEach uses the outputs of step {s}, which does not run before group {}", g.id),
                        ));
                    }
                }
                continue;
            }
            let strings = match &g.for_each {
                Value::String(s) => vec![s.clone()],
                other => {
                    let mut v = Vec::new();
                    collect_strings(other, &mut v);
                    v
                }
            };
            for s in strings {
                let refs = env
                    .check_template(&s)
                    .map_err(|e| l.error_at(&with(&at, &["forEach"]), e))?;
                if let Some(p) = refs.params.iter().find(|p| !rb.params.contains_key(*p)) {
                    return Err(l.error_at(
                        &with(&at, &["forEach"]),
                        format!("forEach uses params.{p}, which is not declared under params"),
                    ));
                }
                if !refs.steps.is_empty() {
                    return Err(l.error_at(
                        &with(&at, &["forEach"]),
                        "this forEach is expanded when planning: it can use params, not step outputs (for items known only at run time write `forEach: {items: …}`)",
                    ));
                }
            }
        }
    }
    for (index, (at, step, group)) in l.all_steps().into_iter().enumerate() {
        let scoped = |id: &str| match group {
            Some(g) => format!("{}/{id}", g.id),
            None => id.to_string(),
        };
        if step.id.is_empty()
            || !step
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(l.error_at(
                &with(&at, &["id"]),
                format!("step id {:?} must be letters, digits, - and _", step.id),
            ));
        }
        if seen.insert(scoped(&step.id), index).is_some() {
            return Err(l.error_at(
                &with(&at, &["id"]),
                format!("duplicate step id {:?}", step.id),
            ));
        }
        if let Some(t) = &step.timeout {
            duration(t).map_err(|e| l.error_at(&with(&at, &["timeout"]), e))?;
        }
        if let Some(r) = &step.retry {
            if r.attempts == 0 {
                return Err(l.error_at(
                    &with(&at, &["retry", "attempts"]),
                    "retry.attempts must be at least 1",
                ));
            }
            duration(&r.backoff).map_err(|e| l.error_at(&with(&at, &["retry", "backoff"]), e))?;
        }
        if let Some(Undo::Auto) = &step.undo
            && step.action.reversibility() != Reversibility::Auto
        {
            return Err(l.error_at(
                &with(&at, &["undo"]),
                format!(
                    "`undo: auto` is not possible for a {} step (auto works for scale, setImage, patch, apply, cordon, uncordon, drain); give an undo action, `none` or `skip`",
                    step.action.name()
                ),
            ));
        }
        if let Some(target) = &step.rollback_to
            && !checkpoints.contains(&scoped(target))
            && !checkpoints.contains(target)
        {
            let why = if seen.contains_key(&scoped(target)) || seen.contains_key(target) {
                "is not a checkpoint (add `checkpoint: true` to it)"
            } else {
                "is not an earlier step"
            };
            return Err(l.error_at(
                &with(&at, &["rollbackTo"]),
                format!("rollbackTo {target:?} {why}"),
            ));
        }
        if step.checkpoint {
            checkpoints.insert(scoped(&step.id));
        }
        if let Err(e) = step.action.validate() {
            return Err(l.error_at(&with(&at, &[step.action.name()]), e));
        }
        // Templates: syntax, parameters that exist, outputs of earlier steps. Each error points
        // at the field that holds the template (the action, `undo` or `when`).
        let mut strings: Vec<(&str, String)> = Vec::new();
        let mut push = |field: &'static str, v: &Value| {
            let mut tmp = Vec::new();
            collect_strings(v, &mut tmp);
            strings.extend(tmp.into_iter().map(|s| (field, s)));
        };
        push(
            step.action.name(),
            &serde_json::to_value(&step.action).expect("actions serialize"),
        );
        if let Some(Undo::Action(u)) = &step.undo {
            push("undo", &serde_json::to_value(u).expect("actions serialize"));
        }
        if let Some(w) = &step.when {
            env.check_expression(w)
                .map_err(|e| l.error_at(&with(&at, &["when"]), format!("when: {e}")))?;
            strings.push(("when", format!("{{{{ {w} }}}}")));
        }
        for (field, s) in &strings {
            let here = with(&at, &[field]);
            let refs = env
                .check_template(s)
                .map_err(|e| l.error_at(&here, format!("step {}: {e}", step.id)))?;
            for p in &refs.params {
                if !rb.params.contains_key(p) {
                    return Err(l.error_at(
                        &here,
                        format!(
                            "step {} uses params.{p}, which is not declared under params",
                            step.id
                        ),
                    ));
                }
            }
            for s2 in &refs.steps {
                match seen.get(s2.as_str()) {
                    Some(&i) if i < index => {}
                    // A group (its expanded steps are named GROUP-ITEM-STEP).
                    _ if rb.steps.iter().any(
                        |e| matches!(e, Entry::Group(g) if s2.starts_with(&format!("{}-", g.id))),
                    ) => {}
                    _ => {
                        return Err(l.error_at(
                            &here,
                            format!(
                                "step {} uses the outputs of step {s2:?}, which is not an earlier step",
                                step.id
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            out.push(k.clone());
            collect_strings(v, out)
        }),
        _ => {}
    }
}

/// Resolve parameter values: `--set` values, then defaults; a missing required parameter is an
/// error located at its declaration.
pub fn resolve_params(
    l: &Loaded,
    set: &[(String, String)],
) -> Result<BTreeMap<String, Value>, Error> {
    let rb = &l.runbook;
    let mut out = BTreeMap::new();
    for (k, v) in set {
        let Some(p) = rb.params.get(k) else {
            return Err(Error::Usage(format!(
                "--set {k}: the runbook {} has no parameter {k:?} (it has: {})",
                l.path.display(),
                if rb.params.is_empty() {
                    "none".to_string()
                } else {
                    rb.params.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            )));
        };
        let v = p
            .coerce(&Value::String(v.clone()))
            .map_err(|e| Error::Usage(format!("--set {k}: {e}")))?;
        out.insert(k.clone(), v);
    }
    for (k, p) in &rb.params {
        if out.contains_key(k) {
            continue;
        }
        match &p.default {
            Some(d) => {
                out.insert(k.clone(), p.coerce(d).expect("checked when parsing"));
            }
            None if p.required => {
                return Err(l.error_at(
                    &[key("params"), key(k)],
                    format!("required parameter {k} is missing (give it with --set {k}=VALUE)"),
                ));
            }
            None => {
                out.insert(k.clone(), Value::Null);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: t}\n";

    fn parse_str(body: &str) -> Result<Loaded, Error> {
        parse(Path::new("t.yaml"), &format!("{HEAD}{body}"))
    }

    #[test]
    fn groups_expand_per_item_in_order_with_scoped_rollback_targets() {
        let mut l = parse_str(
            "params:\n  nodes: {required: true}\nsteps:\n  - id: first\n    run: {command: 'true'}\n  - id: node\n    forEach: \"{{ params.nodes }}\"\n    steps:\n      - id: cordon\n        cordon: {node: \"{{ item }}\"}\n        checkpoint: true\n      - id: hook\n        run: {command: 'true'}\n        rollbackTo: cordon\n",
        )
        .unwrap();
        let params = BTreeMap::from([("nodes".to_string(), Value::from("a, b"))]);
        l.expand(&params).unwrap();
        let ids: Vec<&str> = l.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "first",
                "node-a-cordon",
                "node-a-hook",
                "node-b-cordon",
                "node-b-hook"
            ]
        );
        assert_eq!(l.steps[4].rollback_to.as_deref(), Some("node-b-cordon"));
        assert_eq!(l.steps[3].vars["item"], Value::from("b"));
    }

    #[test]
    fn undo_defaults_follow_the_action() {
        let l = parse_str(
            "steps:\n  - id: s\n    scale: {kind: Deployment, name: w, namespace: n, replicas: 1}\n  - id: r\n    run: {command: 'true'}\n  - id: w\n    wait: {apiVersion: v1, kind: Node, name: n, condition: Ready}\n",
        )
        .unwrap();
        assert!(matches!(l.steps[0].effective_undo(), Undo::Auto));
        assert!(matches!(l.steps[1].effective_undo(), Undo::None));
        assert!(matches!(l.steps[2].effective_undo(), Undo::Skip));
    }

    #[test]
    fn http_requests_that_change_something_are_not_read_only_or_repeated_blindly() {
        let l = parse_str(
            "steps:
  - id: get
    http: {url: 'http://a/health'}
  - id: post
    http: {url: 'http://a/deploy', method: post}
  - id: notify
    http: {url: 'http://a/hook', method: POST}
    undo: skip
",
        )
        .unwrap();
        assert!(!l.steps[0].action.mutates() && l.steps[0].action.safe_to_repeat());
        assert!(matches!(l.steps[0].effective_undo(), Undo::Skip));
        assert!(l.steps[1].action.mutates(), "asks before it");
        assert!(
            !l.steps[1].action.safe_to_repeat(),
            "in doubt after a crash"
        );
        assert!(matches!(l.steps[1].effective_undo(), Undo::None));
        assert!(matches!(l.steps[2].effective_undo(), Undo::Skip));
    }

    #[test]
    fn semantic_errors_are_located() {
        let cases = [
            (
                "steps:\n  - id: r\n    run: {command: 'true'}\n    undo: auto\n",
                "7:5",
                "`undo: auto` is not possible for a run step",
            ),
            (
                "steps:\n  - id: a\n    run: {command: 'true'}\n    scale: {kind: Deployment, name: w, namespace: n, replicas: 1}\n",
                "",
                "exactly one action",
            ),
            (
                "steps:\n  - id: a\n    run: {command: 'echo {{ steps.b.outputs.x }}'}\n  - id: b\n    run: {command: 'true'}\n",
                "6:5",
                "not an earlier step",
            ),
            (
                "steps:\n  - id: g\n    forEach: [a]\n    steps: []\n",
                "",
                "group `g` has no steps",
            ),
            ("steps: []\n", "4:1", "at least one step"),
        ];
        for (body, loc, needle) in cases {
            let e = parse_str(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
            assert!(e.contains(&format!("t.yaml:{loc}")), "{loc}: {e}");
        }
    }

    #[test]
    fn params_are_coerced_and_required_ones_enforced() {
        let l = parse_str(
            "params:\n  n: {type: int, default: 2}\n  on: {type: bool, default: false}\n  ns: {required: true}\nsteps:\n  - id: a\n    run: {command: 'true'}\n",
        )
        .unwrap();
        let e = resolve_params(&l, &[("n".into(), "3".into())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.yaml:7:3: required parameter ns is missing"),
            "{e}"
        );
        let p = resolve_params(
            &l,
            &[("n".into(), "3".into()), ("ns".into(), "shop".into())],
        )
        .unwrap();
        assert_eq!(p["n"], Value::from(3));
        assert_eq!(p["on"], Value::from(false));
        assert!(resolve_params(&l, &[("on".into(), "maybe".into())]).is_err());
    }
}
