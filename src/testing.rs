//! Helpers for the crate's own unit tests.

use std::sync::{Arc, Mutex};

/// Runs `f` with a tracing subscriber of its own (every level, no colours) and
/// returns what it logged.
pub(crate) fn logs_of(f: impl FnOnce()) -> String {
    let captured = Arc::new(Mutex::new(Vec::new()));
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || Sink(sink.clone()))
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = captured.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

/// A tracing writer into a shared buffer.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether this process can give a file to another user (it runs as root);
/// when it cannot, a test that needs it is skipped, except in CI, where it
/// must run.
#[cfg(unix)]
pub(crate) fn can_chown(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs root (to chown a file to another user) and CI must run it"
        );
        println!("skipped {test}: not root, so it cannot chown a file to another user");
    }
    root
}
