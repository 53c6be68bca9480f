//! The access log: one structured line per request, as JSON or logfmt.
//!
//! The proxy emits each line as a `tracing` event with target [`TARGET`];
//! [`AccessLogLayer`] formats those events and hands them to a writer that
//! `main` makes non-blocking (`tracing_appender`), so a slow disk or pipe
//! drops lines instead of slowing the proxy. Every other event goes to the
//! ordinary log, never here.

use crate::config::AccessLogFormat;
use std::fmt::Write as _;
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

/// The `tracing` target of access log events.
pub const TARGET: &str = "mirador_router::access";

/// One request, as the access log shows it.
pub struct AccessRecord<'a> {
    pub tenant: &'a str,
    pub signal: &'a str,
    /// `http`, or `grpc` for an OTLP/gRPC export.
    pub protocol: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// 0 when no answer was sent (the client went away).
    pub status: u16,
    pub endpoint: &'a str,
    pub attempts: u32,
    pub duration_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub request_id: &'a str,
}

/// Emits the access log event of one request.
pub fn record(r: &AccessRecord) {
    tracing::info!(
        target: TARGET,
        tenant = r.tenant,
        signal = r.signal,
        protocol = r.protocol,
        method = r.method,
        path = r.path,
        status = r.status,
        endpoint = r.endpoint,
        attempts = r.attempts,
        duration_ms = r.duration_ms,
        bytes_in = r.bytes_in,
        bytes_out = r.bytes_out,
        request_id = r.request_id,
    );
}

/// Writes access log events, and only those, in `format`.
pub struct AccessLogLayer<W> {
    format: AccessLogFormat,
    writer: W,
}

impl<W> AccessLogLayer<W> {
    pub fn new(format: AccessLogFormat, writer: W) -> Self {
        AccessLogLayer { format, writer }
    }
}

/// A field value as it is written.
enum Value {
    Text(String),
    Number(String),
}

#[derive(Default)]
struct Fields(Vec<(&'static str, Value)>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), Value::Text(value.to_string())));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), Value::Number(value.to_string())));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), Value::Number(value.to_string())));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), Value::Number(format!("{value:.3}"))));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name(), Value::Text(format!("{value:?}"))));
    }
}

impl<S, W> Layer<S> for AccessLogLayer<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let line = match self.format {
            AccessLogFormat::Off => return,
            AccessLogFormat::Json => json_line(&ts, &fields),
            AccessLogFormat::Logfmt => logfmt_line(&ts, &fields),
        };
        let _ = self.writer.make_writer().write_all(line.as_bytes());
    }
}

fn json_line(ts: &str, fields: &Fields) -> String {
    let mut line = format!("{{\"ts\":{}", serde_json::Value::from(ts));
    for (name, value) in &fields.0 {
        let rendered = match value {
            Value::Text(text) => serde_json::Value::from(text.as_str()).to_string(),
            Value::Number(number) => number.clone(),
        };
        let _ = write!(line, ",\"{name}\":{rendered}");
    }
    line.push_str("}\n");
    line
}

fn logfmt_line(ts: &str, fields: &Fields) -> String {
    let mut line = format!("ts={ts}");
    for (name, value) in &fields.0 {
        match value {
            Value::Number(number) => {
                let _ = write!(line, " {name}={number}");
            }
            Value::Text(text)
                if !text.is_empty() && text.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '=') =>
            {
                let _ = write!(line, " {name}={text}");
            }
            Value::Text(text) => {
                let _ = write!(line, " {name}={}", serde_json::Value::from(text.as_str()));
            }
        }
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        Fields(vec![
            ("tenant", Value::Text("acme".into())),
            ("path", Value::Text("/api/v1/query \"x\"".into())),
            ("status", Value::Number("200".into())),
        ])
    }

    #[test]
    fn json_lines_parse_and_escape() {
        let line = json_line("2026-11-28T00:00:00.000Z", &fields());
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["tenant"], "acme");
        assert_eq!(value["path"], "/api/v1/query \"x\"");
        assert_eq!(value["status"], 200);
    }

    #[test]
    fn logfmt_quotes_only_what_needs_it() {
        let line = logfmt_line("2026-11-28T00:00:00.000Z", &fields());
        assert_eq!(line, "ts=2026-11-28T00:00:00.000Z tenant=acme path=\"/api/v1/query \\\"x\\\"\" status=200\n");
    }
}
