//! Progress bars on a terminal (stderr), nothing otherwise or with -q.
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub struct BackupBar {
    bar: Option<ProgressBar>,
}

impl BackupBar {
    pub fn new(quiet: bool) -> BackupBar {
        if quiet || !std::io::stderr().is_terminal() {
            return BackupBar { bar: None };
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} resource types, {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        BackupBar { bar: Some(bar) }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl crate::backup::Progress for BackupBar {
    fn types(&self, total: usize) {
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
        }
    }
    fn type_done(&self, _name: &str) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }
    fn objects(&self, n: u64) {
        if let Some(b) = &self.bar {
            if n % 50 == 0 {
                b.set_message(format!("{n} objects"));
            }
        }
    }
}

static SPINNER: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);

/// A callback that shows, on a terminal, which workloads a drill is still waiting for.
pub fn waiting_spinner(quiet: bool) -> Option<std::sync::Arc<dyn Fn(&[String]) + Send + Sync>> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(std::sync::Arc::new(|waiting: &[String]| {
        let mut guard = SPINNER.lock().expect("spinner lock");
        let bar = guard.get_or_insert_with(|| {
            let b = ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        bar.set_message(format!(
            "waiting for {} workload(s): {}",
            waiting.len(),
            waiting.join(", ")
        ));
    }))
}

pub fn clear_spinner() {
    if let Some(b) = SPINNER.lock().expect("spinner lock").take() {
        b.finish_and_clear();
    }
}
