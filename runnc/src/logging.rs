//! Log lines: to the `--log` file when given (text, or JSON objects with exactly the
//! keys `level`, `msg`, `time` that containerd's go-runc reads), else warnings (and
//! debug lines with `--debug`) to stderr. Errors that end a command are written by
//! [`error`] so they reach the log file once.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Errors opening the log file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log file cannot be opened for appending.
    #[error("cannot open log file {path}")]
    Open {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Sink {
    file: Option<Mutex<File>>,
    json: bool,
    debug: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Installs the logger. Call once, first thing.
pub fn init(log: Option<&Path>, json: bool, debug: bool) -> Result<(), Error> {
    let file = match log {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| Error::Open {
                    path: p.display().to_string(),
                    source,
                })?,
        )),
        None => None,
    };
    let _ = SINK.set(Sink { file, json, debug });
    let _ = tracing_subscriber::registry().with(LineLayer).try_init();
    Ok(())
}

/// Writes the error that ends the command: `runnc: MSG` on stderr and a line at level
/// error in the log file.
pub fn error(msg: &str) {
    eprintln!("runnc: {msg}");
    if let Some(sink) = SINK.get() {
        if sink.file.is_some() {
            write_line(sink, "error", msg);
        }
    }
}

fn write_line(sink: &Sink, level: &str, msg: &str) {
    let time = crate::time::now_rfc3339();
    let line = if sink.json {
        let mut s = serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string();
        s.push('\n');
        s
    } else {
        format!("time=\"{time}\" level={level} msg={msg:?}\n")
    };
    match &sink.file {
        Some(f) => {
            let mut f = f.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(format!("runnc: {level}: {msg}\n").as_bytes());
        }
    }
}

struct LineLayer;

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(sink) = SINK.get() else { return };
        let level = *event.metadata().level();
        let wanted = if sink.debug {
            level <= Level::DEBUG
        } else if sink.file.is_some() {
            level <= Level::INFO
        } else {
            level <= Level::WARN
        };
        if !wanted {
            return;
        }
        let mut m = Message::default();
        event.record(&mut m);
        let name = match level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write_line(sink, name, &m.0);
    }
}
