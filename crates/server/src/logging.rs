//! Logs as etcd writes them, so that existing log pipelines and alerts read oxcd's:
//!
//! - `--logger=zap` (etcd 3.5's default), `--log-format=json`: one JSON object a line,
//!   `{"level":"info","ts":"2026-01-02T03:04:05.678Z","caller":"consensus/peer.rs:560",
//!   "msg":"...", <fields>}`; fields of the event are JSON values, not formatted strings.
//! - `--log-format=console`: zap's console encoder (`ts<TAB>LEVEL<TAB>caller<TAB>msg<TAB>{fields}`).
//! - `--logger=capnslog` (etcd 3.4's default): `2026-01-02 03:04:05.678901 I | pkg: msg`.
//!
//! `--log-outputs` lists the targets (stderr, stdout, files opened for append); with
//! `--enable-log-rotation` the single file is rotated as lumberjack does (`name-<time>.ext`,
//! `maxsize` MB, `maxbackups`, `maxage` days). `--log-level` filters; `OXCD_LOG` (a tracing
//! filter) overrides it for debugging.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogConfig, LogFormat, LogOutput, LogRotation, Logger};

/// Why logging could not be set up (a log file that cannot be opened).
#[derive(Debug, thiserror::Error)]
#[error("cannot open log output {path}: {source}")]
pub struct LogError {
    path: String,
    source: std::io::Error,
}

/// Installs the global subscriber for `cfg` at `level` (a `--log-level` name).
pub fn init(cfg: &LogConfig, level: &str) -> Result<(), LogError> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OXCD_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{},raft=warn", tracing_level(level)))
    });
    let layer = EtcdLayer::new(cfg)?;
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
    Ok(())
}

/// zap's levels in tracing's words (tracing has nothing above error).
fn tracing_level(level: &str) -> &'static str {
    match level {
        "debug" => "debug",
        "info" => "info",
        "warn" => "warn",
        _ => "error",
    }
}

/// Writes each event as one line to every output.
pub struct EtcdLayer {
    logger: Logger,
    format: LogFormat,
    outputs: Mutex<Vec<Output>>,
}

enum Output {
    Stderr,
    Stdout,
    File(File),
    Rotating(Rotating),
}

impl Output {
    fn write_line(&mut self, line: &[u8]) {
        // A failed log write has nowhere to be reported; the line is lost.
        let _ = match self {
            Output::Stderr => std::io::stderr().lock().write_all(line),
            Output::Stdout => std::io::stdout().lock().write_all(line),
            Output::File(f) => f.write_all(line),
            Output::Rotating(r) => r.write_line(line),
        };
    }
}

fn open_append(path: &Path) -> Result<File, LogError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogError {
            path: path.display().to_string(),
            source,
        })
}

impl EtcdLayer {
    pub fn new(cfg: &LogConfig) -> Result<EtcdLayer, LogError> {
        let mut outputs = Vec::new();
        for o in &cfg.outputs {
            outputs.push(match (o, &cfg.rotation) {
                (LogOutput::Stderr, _) => Output::Stderr,
                (LogOutput::Stdout, _) => Output::Stdout,
                (LogOutput::File(p), Some(r)) => Output::Rotating(Rotating::open(p, r.clone())?),
                (LogOutput::File(p), None) => Output::File(open_append(p)?),
            });
        }
        Ok(EtcdLayer {
            logger: cfg.logger,
            format: cfg.format,
            outputs: Mutex::new(outputs),
        })
    }
}

/// The message and the other fields of an event, as JSON values.
#[derive(Default)]
struct Fields {
    msg: String,
    rest: BTreeMap<String, serde_json::Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.msg = text;
        } else {
            self.rest.insert(field.name().into(), text.into());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.into();
        } else {
            self.rest.insert(field.name().into(), value.into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.rest.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.insert(field.name().into(), value.into());
    }
}

impl<S: Subscriber> Layer<S> for EtcdLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let caller = caller(meta.file(), meta.line());
        let now = time::OffsetDateTime::now_utc();
        let line = match (self.logger, self.format) {
            (Logger::Capnslog, _) => capnslog_line(now, *meta.level(), meta.target(), &fields),
            (Logger::Zap, LogFormat::Json) => json_line(now, *meta.level(), &caller, fields),
            (Logger::Zap, LogFormat::Console) => console_line(now, *meta.level(), &caller, &fields),
        };
        if let Ok(mut outs) = self.outputs.lock() {
            for o in outs.iter_mut() {
                o.write_line(line.as_bytes());
            }
        }
    }
}

/// zap's short caller: the last two path components and the line.
fn caller(file: Option<&str>, line: Option<u32>) -> String {
    let file = file.unwrap_or("?");
    let mut parts = file.rsplit('/');
    let name = parts.next().unwrap_or(file);
    let short = match parts.next() {
        Some(dir) if dir != "src" => format!("{dir}/{name}"),
        _ => name.to_string(),
    };
    format!("{short}:{}", line.unwrap_or(0))
}

fn zap_level(l: Level) -> &'static str {
    match l {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        _ => "debug",
    }
}

/// zap's ISO 8601 time in UTC with milliseconds.
fn iso8601(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn json_line(t: time::OffsetDateTime, level: Level, caller: &str, f: Fields) -> String {
    // zap's key order: level, ts, caller, msg, then the fields (serde_json's map sorts).
    let mut s = String::with_capacity(128);
    let head: [(&str, serde_json::Value); 4] = [
        ("level", zap_level(level).into()),
        ("ts", iso8601(t).into()),
        ("caller", caller.into()),
        ("msg", f.msg.into()),
    ];
    for (k, v) in head
        .iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(f.rest.iter().map(|(k, v)| (k.clone(), v)))
    {
        s.push(if s.is_empty() { '{' } else { ',' });
        s.push_str(&serde_json::Value::String(k).to_string());
        s.push(':');
        s.push_str(&v.to_string());
    }
    s.push_str("}\n");
    s
}

fn console_line(t: time::OffsetDateTime, level: Level, caller: &str, f: &Fields) -> String {
    let mut s = format!(
        "{}\t{}\t{caller}\t{}",
        iso8601(t),
        zap_level(level).to_uppercase(),
        f.msg
    );
    if !f.rest.is_empty() {
        let map: serde_json::Map<String, serde_json::Value> =
            f.rest.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        s.push('\t');
        s.push_str(&serde_json::Value::Object(map).to_string());
    }
    s.push('\n');
    s
}

/// capnslog: `2006-01-02 15:04:05.000000 I | pkg: message`, fields appended as `k=v`.
fn capnslog_line(t: time::OffsetDateTime, level: Level, target: &str, f: &Fields) -> String {
    let letter = match level {
        Level::ERROR => 'E',
        Level::WARN => 'W',
        Level::INFO => 'I',
        _ => 'D',
    };
    let pkg = target.rsplit("::").next().unwrap_or(target);
    let mut s = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06} {letter} | {pkg}: {}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond(),
        f.msg
    );
    for (k, v) in &f.rest {
        match v {
            serde_json::Value::String(text) => s.push_str(&format!(" {k}={text}")),
            other => s.push_str(&format!(" {k}={other}")),
        }
    }
    s.push('\n');
    s
}

/// A log file rotated as lumberjack (which etcd uses) rotates it: past `maxsize` MB the
/// file is renamed `name-2006-01-02T15-04-05.000.ext` and a new one started; backups beyond
/// `maxbackups` or older than `maxage` days are removed.
struct Rotating {
    path: PathBuf,
    file: File,
    size: u64,
    cfg: LogRotation,
}

impl Rotating {
    fn open(path: &Path, cfg: LogRotation) -> Result<Rotating, LogError> {
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Rotating {
            path: path.to_path_buf(),
            file,
            size,
            cfg,
        })
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let max = self.cfg.max_size_mb.saturating_mul(1024 * 1024);
        if self.size + line.len() as u64 > max && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn backup_name(&self, t: time::OffsetDateTime) -> PathBuf {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = self
            .path
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let stamp = format!(
            "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}.{:03}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        );
        self.path.with_file_name(format!("{stem}-{stamp}{ext}"))
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        // Backup names are in UTC (lumberjack's default; `localtime` is not honoured).
        let now = time::OffsetDateTime::now_utc();
        std::fs::rename(&self.path, self.backup_name(now))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        self.remove_old_backups();
        Ok(())
    }

    /// Deletes backups past `maxbackups` (newest kept) and older than `maxage` days.
    fn remove_old_backups(&self) {
        let (Some(dir), Some(stem)) = (self.path.parent(), self.path.file_stem()) else {
            return;
        };
        let prefix = format!("{}-", stem.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) else {
            return;
        };
        let mut backups: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        backups.sort_by_key(|b| std::cmp::Reverse(b.0));
        let max_age = std::time::Duration::from_secs(self.cfg.max_age_days * 86_400);
        for (i, (modified, path)) in backups.iter().enumerate() {
            let too_many = self.cfg.max_backups > 0 && i as u64 >= self.cfg.max_backups;
            let too_old =
                self.cfg.max_age_days > 0 && modified.elapsed().is_ok_and(|age| age > max_age);
            if too_many || too_old {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(msg: &str, rest: &[(&str, serde_json::Value)]) -> Fields {
        Fields {
            msg: msg.into(),
            rest: rest
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn t0() -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap()
    }

    #[test]
    fn zap_json_line() {
        let line = json_line(
            t0(),
            Level::WARN,
            "consensus/raft_loop.rs:10",
            fields(
                "slow fdatasync",
                &[("took", "1.5s".into()), ("n", 3.into())],
            ),
        );
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["caller"], "consensus/raft_loop.rs:10");
        assert_eq!(v["msg"], "slow fdatasync");
        assert_eq!(v["took"], "1.5s");
        assert_eq!(v["n"], 3);
        // zap's key order: level, ts, caller, msg, then the fields.
        assert!(line.starts_with(r#"{"level":"warn","ts":"#), "{line}");
    }

    #[test]
    fn console_and_capnslog_lines() {
        let f = fields("ready", &[("k", "v".into())]);
        let c = console_line(t0(), Level::INFO, "src/lib.rs:1", &f);
        assert_eq!(
            c,
            "2023-11-14T22:13:20.123Z\tINFO\tsrc/lib.rs:1\tready\t{\"k\":\"v\"}\n"
        );
        let l = capnslog_line(t0(), Level::INFO, "oxcd_server::api::http", &f);
        assert_eq!(l, "2023-11-14 22:13:20.123456 I | http: ready k=v\n");
        assert_eq!(
            caller(Some("crates/server/src/lib.rs"), Some(7)),
            "lib.rs:7"
        );
        assert_eq!(
            caller(Some("crates/server/src/api/http.rs"), Some(7)),
            "api/http.rs:7"
        );
    }

    #[test]
    fn rotation_keeps_max_backups() {
        let dir = std::env::temp_dir().join(format!("oxcd-logrot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("etcd.log");
        let cfg = LogRotation {
            max_size_mb: 1,
            max_age_days: 0,
            max_backups: 2,
            local_time: false,
            compress: false,
        };
        let mut r = Rotating::open(&path, cfg).unwrap();
        let line = vec![b'x'; 300 * 1024];
        for _ in 0..20 {
            r.write_line(&line).unwrap();
            // Backup names have millisecond stamps.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("etcd") && n.ends_with(".log")),
            "{names:?}"
        );
        assert!(std::fs::metadata(&path).unwrap().len() <= 1024 * 1024);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
