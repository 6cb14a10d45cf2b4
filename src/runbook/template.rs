//! Templates in runbooks (`{{ params.namespace }}`, `{{ steps["take-backup"].outputs.backupId }}`),
//! rendered with minijinja. Undefined values are errors, not empty strings.
//!
//! Functions: `env("NAME")` (an environment variable of the lifeboat process at run time) and
//! `random_token(n)` (n random bytes, hex); both count as secrets: their values are redacted from
//! the journal and messages. Filters: `b64encode`, `b64decode`.
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// Values that must never be written anywhere: replaced by `[REDACTED]`.
#[derive(Debug, Clone, Default)]
pub struct Redactor(Arc<Mutex<BTreeSet<String>>>);

impl Redactor {
    pub fn add(&self, secret: &str) {
        // Very short values would redact ordinary words; they are not useful secrets anyway.
        if secret.len() >= 4 {
            self.0.lock().expect("redactor").insert(secret.to_string());
        }
    }

    /// Whether `text` contains a known secret.
    pub fn touches(&self, text: &str) -> bool {
        let set = self.0.lock().expect("redactor");
        set.iter().any(|s| text.contains(s.as_str()))
    }

    pub fn redact(&self, text: &str) -> String {
        let set = self.0.lock().expect("redactor");
        let mut out = text.to_string();
        // Longest first, so a secret containing another is replaced whole.
        let mut secrets: Vec<&String> = set.iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[REDACTED]");
            }
        }
        out
    }

    pub fn redact_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.redact(s)),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.redact_value(v)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), self.redact_value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Names a template refers to, for checks without rendering.
#[derive(Debug, Default)]
pub struct Refs {
    pub params: BTreeSet<String>,
    pub steps: BTreeSet<String>,
}

pub struct Engine {
    env: Environment<'static>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine::with_redactor(Redactor::default())
    }

    /// For dry runs: what a skipped step would have output is not known, so an undefined value
    /// renders as nothing instead of failing the walk (plans checked the references already).
    pub fn lenient(mut self) -> Engine {
        self.env
            .set_undefined_behavior(UndefinedBehavior::Chainable);
        self
    }

    pub fn with_redactor(redactor: Redactor) -> Engine {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        let r = redactor.clone();
        env.add_function(
            "env",
            move |name: String| -> Result<String, minijinja::Error> {
                match std::env::var(&name) {
                    Ok(v) => {
                        r.add(&v);
                        Ok(v)
                    }
                    Err(_) => Err(minijinja::Error::new(
                        minijinja::ErrorKind::UndefinedError,
                        format!("environment variable {name} is not set"),
                    )),
                }
            },
        );
        let r = redactor.clone();
        env.add_function("random_token", move |n: Option<usize>| -> String {
            let mut buf = vec![0u8; n.unwrap_or(24).clamp(8, 128)];
            getrandom::getrandom(&mut buf).expect("system random source");
            let t = hex::encode(buf);
            r.add(&t);
            t
        });
        // An encoding of a secret is a secret too.
        let r = redactor.clone();
        env.add_filter("b64encode", move |s: String| {
            let out = base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
            if r.touches(&s) {
                r.add(&out);
            }
            out
        });
        let r = redactor;
        env.add_filter(
            "b64decode",
            move |s: String| -> Result<String, minijinja::Error> {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .map_err(|e| {
                        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
                    })?;
                let out = String::from_utf8(b).map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
                })?;
                if r.touches(&s) {
                    r.add(&out);
                }
                Ok(out)
            },
        );
        Engine { env }
    }

    /// Syntax check of a template; returns the params and step outputs it refers to.
    pub fn check_template(&self, s: &str) -> Result<Refs, String> {
        if !is_template(s) {
            return Ok(Refs::default());
        }
        self.env
            .template_from_str(s)
            .map_err(|e| format!("template {s:?}: {}", short(&e)))?;
        Ok(scan_refs(s))
    }

    pub fn check_expression(&self, s: &str) -> Result<(), String> {
        self.env
            .compile_expression(s)
            .map(|_| ())
            .map_err(|e| short(&e))
    }

    /// Render every string in `v`. A string that is exactly one `{{ expression }}` keeps the
    /// expression's type (numbers stay numbers in manifests).
    pub fn render_value(&self, v: &Value, ctx: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => self.render_string(s, ctx)?,
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|v| self.render_value(v, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => {
                let mut out = serde_json::Map::new();
                for (k, v) in m {
                    let k = match self.render_string(k, ctx)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.insert(k, self.render_value(v, ctx)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    fn render_string(&self, s: &str, ctx: &Value) -> Result<Value, String> {
        if !is_template(s) {
            return Ok(Value::String(s.to_string()));
        }
        let t = s.trim();
        if let Some(inner) = t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}"))
            && !inner.contains("{{")
            && !inner.contains("}}")
            && !inner.contains("{%")
        {
            let expr = self
                .env
                .compile_expression(inner.trim())
                .map_err(|e| format!("template {s:?}: {}", short(&e)))?;
            let v = expr
                .eval(ctx)
                .map_err(|e| format!("template {s:?}: {}", short(&e)))?;
            if v.is_undefined() {
                return Err(format!("template {s:?}: undefined value"));
            }
            return serde_json::to_value(&v).map_err(|e| format!("template {s:?}: {e}"));
        }
        let tmpl = self
            .env
            .template_from_str(s)
            .map_err(|e| format!("template {s:?}: {}", short(&e)))?;
        tmpl.render(ctx)
            .map(Value::String)
            .map_err(|e| format!("template {s:?}: {}", short(&e)))
    }

    /// Evaluate a `when` condition.
    pub fn condition(&self, expr: &str, ctx: &Value) -> Result<bool, String> {
        let e = self
            .env
            .compile_expression(expr)
            .map_err(|e| format!("when {expr:?}: {}", short(&e)))?;
        let v = e
            .eval(ctx)
            .map_err(|e| format!("when {expr:?}: {}", short(&e)))?;
        if v.is_undefined() {
            return Err(format!("when {expr:?}: undefined value"));
        }
        Ok(v.is_true())
    }
}

pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

fn short(e: &minijinja::Error) -> String {
    let mut m = e.kind().to_string();
    if let Some(d) = e.detail() {
        m = format!("{m}: {d}");
    }
    m
}

/// `params.NAME`, `steps.ID`, `steps["ID"]` / `steps['ID']` occurrences.
fn scan_refs(s: &str) -> Refs {
    let mut r = Refs::default();
    let ident = |rest: &str| -> String {
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let boundary = i == 0 || {
            let prev = s[..i].chars().next_back().unwrap_or(' ');
            !(prev.is_ascii_alphanumeric() || prev == '_' || prev == '.')
        };
        if boundary && let Some(after) = rest.strip_prefix("params.") {
            let name = ident(after);
            if !name.is_empty() {
                r.params.insert(name);
            }
        } else if boundary && let Some(after) = rest.strip_prefix("steps") {
            if let Some(a) = after.strip_prefix('.') {
                let name = ident(a);
                if !name.is_empty() {
                    r.steps.insert(name);
                }
            } else if let Some(a) = after
                .strip_prefix("[\"")
                .or_else(|| after.strip_prefix("['"))
                && let Some(end) = a.find(['"', '\''])
            {
                r.steps.insert(a[..end].to_string());
            }
        }
        i += rest.chars().next().map(char::len_utf8).unwrap_or(1);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_are_found() {
        let r = scan_refs(
            r#"{{ params.ns }}-{{ steps["take-backup"].outputs.id }} {{ steps.b.outputs.x }}"#,
        );
        assert_eq!(r.params.iter().collect::<Vec<_>>(), ["ns"]);
        assert_eq!(r.steps.iter().collect::<Vec<_>>(), ["b", "take-backup"]);
    }

    #[test]
    fn whole_expression_keeps_its_type() {
        let e = Engine::new();
        let ctx = json!({"params": {"n": 3, "ns": "shop"}});
        assert_eq!(
            e.render_value(&json!("{{ params.n }}"), &ctx).unwrap(),
            json!(3)
        );
        assert_eq!(
            e.render_value(&json!("ns-{{ params.ns }}"), &ctx).unwrap(),
            json!("ns-shop")
        );
        assert!(e.render_value(&json!("{{ params.nope }}"), &ctx).is_err());
        assert!(e.condition("params.n > 2", &ctx).unwrap());
    }

    #[test]
    fn secrets_are_redacted() {
        let r = Redactor::default();
        let e = Engine::with_redactor(r.clone());
        let v = e
            .render_value(&json!("{{ random_token(16) }}"), &json!({}))
            .unwrap();
        let token = v.as_str().unwrap().to_string();
        assert_eq!(token.len(), 32);
        assert_eq!(r.redact(&format!("value={token}")), "value=[REDACTED]");
        let enc = e
            .render_value(
                &json!(format!("{{{{ '{token}' | b64encode }}}}")),
                &json!({}),
            )
            .unwrap();
        assert_eq!(
            r.redact(enc.as_str().unwrap()),
            "[REDACTED]",
            "the encoding of a secret is secret"
        );
        assert_eq!(
            e.render_value(&json!("{{ 'abc' | b64encode }}"), &json!({}))
                .unwrap(),
            json!("YWJj")
        );
    }
}
