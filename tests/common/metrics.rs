//! The Prometheus text format (0.0.4): a parser of expositions and lookups
//! of series, the agent's per-listener and per-pool figures, and the
//! reference checkers (`promtool check metrics`, Python's
//! `prometheus_client` parser).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use super::prereq;
use super::process::pipe_through;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition (text format 0.0.4).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub text: String,
    pub series: Vec<Series>,
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

/// Parses one sample line: `name{l="v",...} value [timestamp]`.
pub fn parse_series_line(line: &str) -> Result<Series, String> {
    let err = |m: &str| format!("{m} in {line:?}");
    let mut chars = line.char_indices().peekable();
    let mut name = String::new();
    while let Some(&(_, c)) = chars.peek() {
        if !is_name_char(c, name.is_empty()) {
            break;
        }
        name.push(c);
        chars.next();
    }
    if name.is_empty() {
        return Err(err("no metric name"));
    }
    let mut labels = BTreeMap::new();
    if chars.peek().map(|&(_, c)| c) == Some('{') {
        chars.next();
        loop {
            while chars.peek().is_some_and(|&(_, c)| c == ' ') {
                chars.next();
            }
            match chars.peek().map(|&(_, c)| c) {
                Some('}') => {
                    chars.next();
                    break;
                }
                None => return Err(err("unterminated label set")),
                _ => {}
            }
            let mut lname = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if !is_name_char(c, lname.is_empty()) || c == ':' {
                    break;
                }
                lname.push(c);
                chars.next();
            }
            if lname.is_empty()
                || chars.next().map(|(_, c)| c) != Some('=')
                || chars.next().map(|(_, c)| c) != Some('"')
            {
                return Err(err("bad label"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        _ => return Err(err("bad escape")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(err("unterminated label value")),
                }
            }
            if labels.insert(lname, value).is_some() {
                return Err(err("duplicate label"));
            }
            match chars.next().map(|(_, c)| c) {
                Some(',') => {}
                Some('}') => break,
                _ => return Err(err("expected , or }")),
            }
        }
    }
    let rest = match chars.peek() {
        Some(&(i, ' ')) => &line[i..],
        _ => return Err(err("no value")),
    };
    let mut fields = rest.split_whitespace();
    let value = match fields.next().ok_or_else(|| err("no value"))? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| err("bad value"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| err("bad timestamp"))?;
    }
    if fields.next().is_some() {
        return Err(err("trailing fields"));
    }
    Ok(Series {
        name,
        labels,
        value,
    })
}

impl Metrics {
    /// Parses an exposition; `#` lines and blank lines are skipped.
    pub fn parse(text: &str) -> Result<Metrics, String> {
        let series = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(parse_series_line)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Metrics {
            text: text.to_owned(),
            series,
        })
    }

    /// The series of `name` whose label set is exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut hits = self
            .series
            .iter()
            .filter(|s| s.name == name && s.labels == want);
        let hit = hits.next()?;
        assert!(hits.next().is_none(), "duplicate series {name}{labels:?}");
        Some(hit.value)
    }

    /// Like [`Metrics::get`] but panics, showing the family, when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            panic!(
                "series {name}{labels:?} is absent; the family has:\n{:#?}",
                self.all(name)
            )
        })
    }

    /// Every series of `name`.
    pub fn all(&self, name: &str) -> Vec<&Series> {
        self.series.iter().filter(|s| s.name == name).collect()
    }

    /// Series of `name` whose labels include all of `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Series> {
        self.all(name)
            .into_iter()
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The `sockscope_listen_*` series of one listener (`None` = absent).
    pub fn listener(&self, proto: &str, listener: &str) -> ListenerSeries {
        let l = [("proto", proto), ("listener", listener)];
        let conns = |state| {
            self.get(
                "sockscope_listen_connections",
                &[l[0], l[1], ("state", state)],
            )
        };
        ListenerSeries {
            length: self.get("sockscope_listen_queue_length", &l),
            limit: self.get("sockscope_listen_queue_limit", &l),
            full_seconds: self.get("sockscope_listen_queue_full_seconds_total", &l),
            connecting: conns("connecting"),
            connected: conns("connected"),
            sockets: self.get("sockscope_listen_sockets", &l),
        }
    }
}

/// The `sockscope_listen_*` figures of one listener.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListenerSeries {
    pub length: Option<f64>,
    pub limit: Option<f64>,
    pub full_seconds: Option<f64>,
    pub connecting: Option<f64>,
    pub connected: Option<f64>,
    pub sockets: Option<f64>,
}

/// The agent's figures of one (source, destination) pool; `None` when the
/// agent has no such pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolFigures {
    pub established: f64,
    pub time_wait: f64,
    pub other: f64,
    pub time_wait_reusable: f64,
    pub available: f64,
}

impl PoolFigures {
    pub fn read(m: &Metrics, local_ip: &str, destination: &str) -> Option<PoolFigures> {
        let p = [("local_ip", local_ip), ("destination", destination)];
        let available = m.get("sockscope_ephemeral_ports_available", &p)?;
        let used = |st| {
            m.value(
                "sockscope_ephemeral_ports_used",
                &[p[0], p[1], ("state", st)],
            )
        };
        Some(PoolFigures {
            established: used("established"),
            time_wait: used("time_wait"),
            other: used("other"),
            time_wait_reusable: m.value("sockscope_ephemeral_ports_time_wait_reusable", &p),
            available,
        })
    }
}

/// Every destination label of `sockscope_ephemeral_ports_used`.
pub fn pool_destinations(m: &Metrics) -> BTreeSet<String> {
    m.all("sockscope_ephemeral_ports_used")
        .into_iter()
        .filter_map(|s| s.labels.get("destination").cloned())
        .collect()
}

/// Runs `promtool check metrics` on the exposition: no output, exit 0.
/// Panics when promtool is missing ([`prereq::tool`]).
pub fn check_promtool(text: &str) {
    let out = pipe_through(
        prereq::command("promtool").args(["check", "metrics"]),
        "promtool",
        text,
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}",
        out.status
    );
}

/// Parses the exposition with Python's `prometheus_client` parser and
/// returns the number of samples it found. Panics when python3 or the
/// module is missing ([`prereq::python_with`]).
pub fn check_python_parser(text: &str) -> usize {
    let python = prereq::python_with(&["prometheus_client.parser"]);
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        fams = list(text_string_to_metric_families(sys.stdin.read()))\n\
        print(sum(len(f.samples) for f in fams))\n";
    let out = pipe_through(
        Command::new(&python).args(["-c", script]),
        &python.display().to_string(),
        text,
    );
    assert!(
        out.status.success(),
        "prometheus_client parser rejected the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("sample count")
}
