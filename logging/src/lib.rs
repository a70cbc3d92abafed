//! One log format for every vRouter daemon (`vrouter-dp`, `vrouter-agent`, `vrouter-shim`,
//! `vrouter-xenstored`): `tracing` with a logfmt formatter on stderr, the `log` crate's macros
//! bridged into it (`tracing-log`), so existing `log::info!` lines keep working.
//!
//! ```text
//! ts=2026-12-03T11:40:00.123456Z level=info target=vrouter_dp msg="control socket listening" vif=3
//! ```
//!
//! When stderr is the journal (`JOURNAL_STREAM` set by systemd) each line starts with its
//! syslog priority (`<3>` error ... `<7>` trace), so `journalctl -p warning` filters by level.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Why logging could not be set up.
#[derive(Debug)]
pub struct InitError(String);

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InitError {}

/// Installs the logger: `RUST_LOG` if set, else `filter` (`info`, `warn,vrouter_dp=debug`, ...).
/// A second call fails (the first logger stays).
pub fn init(filter: &str) -> Result<(), InitError> {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| filter.to_string());
    let filter =
        EnvFilter::try_new(&spec).map_err(|e| InitError(format!("log filter {spec:?}: {e}")))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Logfmt {
            journald: std::env::var_os("JOURNAL_STREAM").is_some(),
        })
        .try_init()
        .map_err(|e| InitError(e.to_string()))
}

/// The logfmt line format.
#[derive(Debug, Clone, Copy)]
pub struct Logfmt {
    /// Prefix lines with their syslog priority (`<N>`) for journald.
    pub journald: bool,
}

/// The syslog priority journald reads from a `<N>` prefix.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if self.journald {
            write!(w, "<{}>", priority(meta.level()))?;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        // Bridged `log` records carry their target in a field; native events in the metadata.
        let target = fields.log_target.as_deref().unwrap_or(meta.target());
        write!(
            w,
            "ts={} level={} target={} msg={}",
            timestamp(),
            meta.level().as_str().to_ascii_lowercase(),
            target,
            quoted(&fields.message)
        )?;
        for (k, v) in &fields.rest {
            write!(w, " {k}={}", quoted(v))?;
        }
        writeln!(w)
    }
}

/// An event's fields: the message, the `log` bridge's target, the rest in order.
#[derive(Default)]
struct Fields {
    message: String,
    log_target: Option<String>,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "log.target" => self.log_target = Some(value.to_string()),
            n if n.starts_with("log.") => {}
            n => self.rest.push((n, value.to_string())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            n if n.starts_with("log.") => {}
            n => self.rest.push((n, format!("{value:?}"))),
        }
    }
}

/// A logfmt value: bare when it is one plain word, otherwise double-quoted with `"` and `\`
/// escaped and control characters written as escapes (a value never spans lines).
fn quoted(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        return v.to_string();
    }
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            c if c.is_control() => s.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// UTC time with microseconds, RFC 3339 (`2026-12-03T11:40:00.123456Z`).
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_spaces_or_quotes_are_quoted_and_escaped() {
        assert_eq!(quoted("vif3"), "vif3");
        assert_eq!(quoted("opened vif3"), "\"opened vif3\"");
        assert_eq!(quoted("a \"b\"\nc"), "\"a \\\"b\\\"\\nc\"");
        assert_eq!(quoted(""), "\"\"");
    }

    #[test]
    fn days_map_to_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
