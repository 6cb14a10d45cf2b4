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

const VOLUME_TEMPLATE: &str =
    "{spinner} volume {prefix}: {msg} files, {bytes} ({bytes_per_sec}), {elapsed}";

/// One volume's data movement on a terminal: a spinner with files, bytes and rate, read from the
/// pipeline's counters (which it resets). Nothing when `enabled` is false or stderr is not a
/// terminal. Cleared when dropped.
pub struct VolumeBar {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl VolumeBar {
    pub fn start(
        label: &str,
        counters: std::sync::Arc<crate::volume::Counters>,
        enabled: bool,
    ) -> VolumeBar {
        use std::sync::atomic::Ordering;
        counters.bytes.store(0, Ordering::Relaxed);
        counters.files.store(0, Ordering::Relaxed);
        if !enabled || !std::io::stderr().is_terminal() {
            return VolumeBar {
                bar: None,
                task: None,
            };
        }
        let bar = ProgressBar::new_spinner()
            .with_style(ProgressStyle::with_template(VOLUME_TEMPLATE).expect("a valid template"));
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                b.set_position(counters.bytes.load(Ordering::Relaxed));
                b.set_message(counters.files.load(Ordering::Relaxed).to_string());
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        });
        VolumeBar {
            bar: Some(bar),
            task: Some(task),
        }
    }
}

impl Drop for VolumeBar {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_volume_template_is_valid() {
        assert!(indicatif::ProgressStyle::with_template(super::VOLUME_TEMPLATE).is_ok());
    }
}
