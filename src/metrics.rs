//! What every metric family shares: its [`Spec`] (name, help, type, label
//! names), a [`Families`] builder that the analyses push their samples
//! into, and the text encoding (the `prometheus` crate's encoder, format
//! 0.0.4).
//!
//! Each analysis (`crate::collector::*`) defines the specs of the families
//! it computes beside the code that computes them and encodes itself with
//! an `encode(&self, &mut Families)` method; unit tests read the encoded
//! text back through [`encoded`].
//!
//! A scope ([`Families::scoped`]) puts constant labels in front of every
//! sample pushed inside it: the same analyses encode once per instance of
//! their sources (a network namespace, say) under one label more.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// The type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One metric family of the contract (the README's metric table).
#[derive(Debug)]
pub struct Spec {
    /// `sockscope_…`, with the unit and `_total` suffixes of the
    /// Prometheus conventions.
    pub name: &'static str,
    /// The HELP text: what the figure is and where the kernel keeps it.
    pub help: &'static str,
    pub kind: Kind,
    /// Label names, in the order [`Families::push`] takes their values.
    pub labels: &'static [&'static str],
}

/// Declares `pub static NAME: Spec` items: `NAME = "metric_name", Gauge,
/// ["label", …], "help";`. Static, not const: [`Families`] tells families
/// apart by their spec's address, and a const is inlined at each use, so
/// two uses of one need not share an address.
#[macro_export]
macro_rules! metric_specs {
    ($($(#[$doc:meta])* $id:ident = $name:literal, $kind:ident, [$($l:literal),*], $help:literal;)*) => {
        $($(#[$doc])* pub static $id: $crate::metrics::Spec = $crate::metrics::Spec {
            name: $name,
            help: $help,
            kind: $crate::metrics::Kind::$kind,
            labels: &[$($l),*],
        };)*
    };
}

/// Metric families under construction, in the order of their first sample.
#[derive(Default)]
pub struct Families {
    fams: Vec<(&'static Spec, Vec<Metric>)>,
    scope: Vec<(&'static str, String)>,
}

impl Families {
    pub fn new() -> Families {
        Families::default()
    }

    /// Runs `f` with `labels` put in front of every sample it pushes.
    pub(crate) fn scoped<R>(
        &mut self,
        labels: &[(&'static str, String)],
        f: impl FnOnce(&mut Families) -> R,
    ) -> R {
        let outer = self.scope.len();
        self.scope.extend(labels.iter().cloned());
        let r = f(self);
        self.scope.truncate(outer);
        r
    }

    /// Adds one sample of `spec` with `values` for its labels (in
    /// [`Spec::labels`] order).
    ///
    /// # Panics
    /// In debug builds, when the number of values is not the number of
    /// label names (a programming error).
    pub fn push(&mut self, spec: &'static Spec, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), spec.labels.len(), "{}", spec.name);
        let pair = |n: &str, v: &str| {
            let mut p = LabelPair::default();
            p.set_name(n.to_owned());
            p.set_value(v.to_owned());
            p
        };
        let pairs = self
            .scope
            .iter()
            .map(|(n, v)| pair(n, v))
            .chain(spec.labels.iter().zip(values).map(|(n, v)| pair(n, v)))
            .collect();
        let mut m = Metric::from_label(pairs);
        match spec.kind {
            Kind::Counter => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        match self.fams.iter_mut().find(|(s, _)| std::ptr::eq(*s, spec)) {
            Some((_, metrics)) => metrics.push(m),
            None => self.fams.push((spec, vec![m])),
        }
    }

    /// Adds the one sample of a family without labels, when there is one
    /// (`None` leaves the family out: unknown is not zero).
    pub fn one(&mut self, spec: &'static Spec, value: Option<f64>) {
        if let Some(v) = value {
            self.push(spec, &[], v);
        }
    }

    /// The families, for the encoder: sorted by name, and each family's
    /// samples by their label values (as the `prometheus` crate's registry
    /// gathers), so the exposition does not depend on push order.
    pub fn finish(mut self) -> Vec<MetricFamily> {
        self.fams.sort_by_key(|(spec, _)| spec.name);
        self.fams
            .into_iter()
            .map(|(spec, mut metrics)| {
                fn values(m: &Metric) -> impl Iterator<Item = &str> {
                    m.get_label().iter().map(|l| l.value())
                }
                metrics.sort_by(|a, b| values(a).cmp(values(b)));
                let mut mf = MetricFamily::default();
                mf.set_name(spec.name.to_owned());
                mf.set_help(spec.help.to_owned());
                mf.set_field_type(match spec.kind {
                    Kind::Counter => MetricType::COUNTER,
                    Kind::Gauge => MetricType::GAUGE,
                });
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}

/// Encodes families in the text format 0.0.4.
///
/// # Errors
/// What the `prometheus` encoder reports: an invalid metric or label name
/// (a programming error; the specs are constants), never I/O.
pub fn encode(families: &[MetricFamily]) -> Result<String, prometheus::Error> {
    prometheus::TextEncoder::new().encode_to_string(families)
}

/// The text of what `f` pushes (for tests of one analysis' families).
///
/// # Panics
/// When the encoder fails.
pub fn encoded(f: impl FnOnce(&mut Families)) -> String {
    let mut fams = Families::new();
    f(&mut fams);
    encode(&fams.finish()).expect("families encode")
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::metric_specs! {
        A = "t_a", Gauge, ["x"], "a gauge";
        B = "t_b_total", Counter, [], "a counter";
    }

    #[test]
    fn scopes_prefix_labels_and_families_merge() {
        let text = encoded(|f| {
            f.push(&A, &["1"], 1.0);
            f.scoped(&[("netns", "42".into())], |f| {
                f.push(&A, &["2"], 2.0);
                f.one(&B, Some(3.0));
            });
            f.one(&B, None);
        });
        // Sorted by label values: "1" < "42".
        assert_eq!(
            text,
            "# HELP t_a a gauge\n# TYPE t_a gauge\nt_a{x=\"1\"} 1\nt_a{netns=\"42\",x=\"2\"} 2\n\
             # HELP t_b_total a counter\n# TYPE t_b_total counter\nt_b_total{netns=\"42\"} 3\n"
        );
    }
}
