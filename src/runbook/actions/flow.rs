//! Flow actions: approve, assert.
use super::*;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApproveAction {
    pub message: String,
    /// Who may approve (Kubernetes identities); none: whoever runs lifeboat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Approvers>,
}

/// `approve.approvers`: Kubernetes users or groups, and/or "not the one who started the run".
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Approvers {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// A different Kubernetes identity than the one that started the run (four eyes).
    #[serde(default)]
    pub not_starter: bool,
}

impl Act for ApproveAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::ReadOnly
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(format!("ask for approval: {}", self.message))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, _ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        // The engine asks and records approvals (they need the prompt and the journal); a
        // step reaching here was approved.
        Ok(Outcome {
            summary: "approved".into(),
            ..Default::default()
        })
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("approve")
    }
}

/// `assert`: fail the step unless an expression over the run's parameters and step outputs
/// holds (`that: steps.check.outputs.ready == "true"`, the language of `when`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AssertAction {
    pub that: String,
    /// Shown when it does not hold (default: the expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Act for AssertAction {
    fn validate(&self) -> R<()> {
        crate::runbook::template::Engine::new()
            .check_expression(&self.that)
            .map_err(|e| format!("assert.that: {e}"))
    }
    fn reversibility(&self) -> Reversibility {
        Reversibility::ReadOnly
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(format!("check that {}", self.that))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        let eval = ctx
            .eval
            .ok_or("assert needs the run's outputs, which this context does not have")?;
        let holds = eval(&self.that)?;
        let mut o = Outcome::default();
        o.outputs.insert("holds".into(), json!(holds));
        if !holds {
            return Err(match &self.message {
                Some(m) => format!("assertion failed: {m} ({})", self.that),
                None => format!("assertion failed: {}", self.that),
            });
        }
        o.summary = format!("holds: {}", self.that);
        Ok(o)
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("assert")
    }
}
