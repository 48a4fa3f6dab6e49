//! The processing stage between the source and the sinks: parse, transform, route.
//!
//! Key decision: a handful of declarative steps, not a scripting language. The stage runs in
//! the pipeline's fan-out task on each `SourceBatch` (events only: the batch's file positions
//! are untouched), so a dropped line still advances the checkpoint: it was handled. Then
//! `route` gives each sink the subset its `match:` selects; a sink with nothing in a chunk does
//! not get it and is not waited for, so it never holds a commit back.
//!
//! Cost: with defaults (`parse: auto`, no transforms, no `match:`), a plain-text line costs a
//! first-byte check (JSON) or a first-word scan (logfmt) and nothing else; the chunk is shared
//! by every sink as before.

pub mod parse;
pub mod select;
pub mod template;
pub mod transform;

use crate::event::Event;
use crate::pipeline::Chunk;
use crate::pipeline::SinkId;
use parse::{Outcome, ParseSettings};
pub use select::Selector;
use select::SourceCache;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use transform::{Transform, TransformConfig};

/// `vigil_transform_dropped_total{transform}`, `vigil_route_unmatched_total`,
/// `vigil_parse_failed_total{format}`, `vigil_parse_fields_cut_total`.
#[derive(Clone)]
pub struct ProcessMetrics {
    dropped: prometheus::IntCounterVec,
    unmatched: prometheus::IntCounter,
    parse_failed: prometheus::IntCounterVec,
    fields_cut: prometheus::IntCounter,
}

impl ProcessMetrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let dropped = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "vigil_transform_dropped_total",
                "Log lines dropped by a transform (drop, sample, rate_limit), by transform name. Dropped lines are \
                 checkpointed.",
            ),
            &["transform"],
        )?;
        let unmatched = prometheus::IntCounter::new(
            "vigil_route_unmatched_total",
            "Log lines that no sink's match: selected (checkpointed, sent nowhere).",
        )?;
        let parse_failed = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "vigil_parse_failed_total",
                "Messages that looked like (or were required to be) JSON or logfmt but did not parse; shipped as text.",
            ),
            &["format"],
        )?;
        let fields_cut = prometheus::IntCounter::new(
            "vigil_parse_fields_cut_total",
            "Parsed fields left out because a message had more than sources.containers.max_fields.",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(unmatched.clone()))?;
        registry.register(Box::new(parse_failed.clone()))?;
        registry.register(Box::new(fields_cut.clone()))?;
        for f in ["json", "logfmt"] {
            parse_failed.with_label_values(&[f]);
        }
        Ok(Self { dropped, unmatched, parse_failed, fields_cut })
    }
}

/// The compiled stage: parse settings, transforms with their state, and one route per log
/// sink (in the order of the pipeline's sinks; None = everything).
pub struct Stage {
    parse: ParseSettings,
    transforms: Vec<(Transform, prometheus::IntCounter)>,
    /// The `match:` of each sink that has one (by pipeline sink id); the others take everything.
    routes: HashMap<SinkId, Selector>,
    metrics: Option<ProcessMetrics>,
    clock: Instant,
    last_parse_warning: Option<Instant>,
}

impl Stage {
    /// A stage that ships every line as read, to every sink (parse off, nothing else).
    pub fn passthrough() -> Self {
        Self::new(
            ParseSettings { mode: parse::ParseMode::Off, use_message_time: false, max_fields: 0 },
            &[],
            Vec::new(),
            None,
        )
    }

    /// From validated config. `routes` holds the `match:` of the sinks given to
    /// `Pipeline::start_staged`, in their order (ids 0, 1, ...); sinks added later get theirs
    /// with `SinkSet::route`.
    pub fn new(
        parse: ParseSettings,
        transforms: &[TransformConfig],
        routes: Vec<Option<Selector>>,
        metrics: Option<ProcessMetrics>,
    ) -> Self {
        let transforms = transforms
            .iter()
            .map(|t| {
                let counter = match &metrics {
                    Some(m) => m.dropped.with_label_values(&[t.name()]),
                    None => prometheus::IntCounter::new("unregistered", "unregistered").expect("valid name"),
                };
                (t.compile(), counter)
            })
            .collect();
        let routes =
            routes.into_iter().enumerate().filter_map(|(i, r)| Some((i as SinkId, r?))).collect::<HashMap<_, _>>();
        Self { parse, transforms, routes, metrics, clock: Instant::now(), last_parse_warning: None }
    }

    /// The stage `config` describes, its metrics registered on `registry`. The sinks' `match:`
    /// are set as they join the pipeline (`SinkSet::route`, see `app`).
    pub fn from_config(config: &crate::config::Config, registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let metrics = ProcessMetrics::register(registry)?;
        Ok(Self::new(config.sources.containers.parse_settings(), &config.transforms, Vec::new(), Some(metrics)))
    }

    /// Sets (or clears) the `match:` of sink `id`.
    pub fn set_route(&mut self, id: SinkId, selector: Option<Selector>) {
        match selector {
            Some(s) => {
                self.routes.insert(id, s);
            }
            None => {
                self.routes.remove(&id);
            }
        }
    }

    /// Parses and transforms `events` in place (dropped ones are removed).
    pub fn apply(&mut self, events: &mut Vec<Event>) {
        if self.parse.mode != parse::ParseMode::Off {
            let (mut failed_json, mut failed_logfmt, mut cut) = (0u64, 0u64, 0u64);
            let mut sample: Option<String> = None;
            for e in events.iter_mut() {
                let (outcome, c) = parse::parse_event(e, &self.parse);
                cut += c;
                if let Outcome::Failed(f) = outcome {
                    if f == "json" {
                        failed_json += 1
                    } else {
                        failed_logfmt += 1
                    }
                    if sample.is_none() {
                        sample = Some(e.source.file.clone());
                    }
                }
            }
            if let Some(m) = &self.metrics {
                m.parse_failed.with_label_values(&["json"]).inc_by(failed_json);
                m.parse_failed.with_label_values(&["logfmt"]).inc_by(failed_logfmt);
                m.fields_cut.inc_by(cut);
            }
            if let Some(path) = sample {
                // One warning a minute at most: a container writing text under `parse: json`
                // would otherwise log once per line.
                let now = Instant::now();
                if self.last_parse_warning.is_none_or(|t| now.duration_since(t).as_secs() >= 60) {
                    self.last_parse_warning = Some(now);
                    tracing::warn!(
                        path = %path,
                        error = "message is not valid JSON/logfmt",
                        mode = ?self.parse.mode,
                        "parse failed; shipped as text (counted in vigil_parse_failed_total)"
                    );
                }
            }
        }
        if self.transforms.is_empty() || events.is_empty() {
            return;
        }
        let now_sec = self.clock.elapsed().as_secs();
        for (t, counter) in &mut self.transforms {
            let dropped = t.apply(events, now_sec);
            counter.inc_by(dropped);
            if events.is_empty() {
                break;
            }
        }
    }

    /// The chunk each of `sinks` gets, in their order (None: nothing for it). Without any
    /// `match:`, one shared chunk for all (or none when `events` is empty). Lines no sink takes
    /// are counted.
    pub fn route(&self, id: u64, events: Vec<Event>, sinks: &[SinkId]) -> Vec<Option<Arc<Chunk>>> {
        if events.is_empty() {
            return vec![None; sinks.len()];
        }
        let routes: Vec<Option<&Selector>> = sinks.iter().map(|s| self.routes.get(s)).collect();
        if routes.iter().all(Option::is_none) {
            let chunk = Arc::new(Chunk { id, events });
            return vec![Some(chunk); sinks.len()];
        }
        let mut caches: Vec<SourceCache> = routes.iter().map(|_| SourceCache::default()).collect();
        // Per sink, whether each event goes there.
        let picks: Vec<Option<Vec<bool>>> = routes
            .iter()
            .zip(caches.iter_mut())
            .map(|(r, cache)| r.map(|sel| events.iter().map(|e| cache.matches(sel, e)).collect()))
            .collect();
        let takes_all = routes.iter().any(Option::is_none);
        if !takes_all {
            let unmatched =
                (0..events.len()).filter(|&i| picks.iter().all(|p| p.as_ref().is_some_and(|p| !p[i]))).count() as u64;
            if let Some(m) = &self.metrics {
                m.unmatched.inc_by(unmatched);
            }
        }
        let mut subsets: Vec<Option<Vec<Event>>> = picks
            .iter()
            .map(|p| match p {
                None => None,
                Some(p) if p.iter().all(|&x| x) => None,
                Some(p) => Some(events.iter().zip(p).filter(|(_, k)| **k).map(|(e, _)| e.clone()).collect()),
            })
            .collect();
        let full = Arc::new(Chunk { id, events });
        subsets
            .iter_mut()
            .map(|sub| match sub.take() {
                Some(sub) if sub.is_empty() => None,
                Some(sub) => Some(Arc::new(Chunk { id, events: sub })),
                None => Some(full.clone()),
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{K8sMeta, Origin, Source, Stream};

    /// An event of container `container` in `namespace`, timestamp 0.
    pub fn ev(namespace: &str, container: &str, stream: Stream, message: &str) -> Event {
        Event {
            timestamp: 0,
            stream,
            message: message.into(),
            malformed: false,
            truncated: false,
            source: Arc::new(Source {
                file: format!("/var/log/pods/{namespace}_p_u/{container}/0.log"),
                node: "n".into(),
                kubernetes: K8sMeta {
                    namespace: namespace.into(),
                    pod: "p".into(),
                    pod_uid: "u".into(),
                    container: container.into(),
                    container_id: None,
                    restart_count: Some(0),
                    ..Default::default()
                },
            }),
            origin: Origin { file: 1, offset: 0, resume: 1 },
            parsed: None,
        }
    }

    fn selector(yaml: &str) -> Selector {
        serde_yaml_ng::from_str::<select::SelectorConfig>(yaml).unwrap().compile()
    }

    #[test]
    fn route_gives_each_sink_its_subset_and_counts_the_unmatched() {
        let registry = prometheus::Registry::new();
        let m = ProcessMetrics::register(&registry).unwrap();
        let stage = Stage::new(
            ParseSettings { mode: parse::ParseMode::Off, use_message_time: false, max_fields: 0 },
            &[],
            vec![Some(selector("{namespace: prod-*}")), Some(selector("{namespace: dev}"))],
            Some(m.clone()),
        );
        let events = vec![
            ev("prod-a", "c", Stream::Stdout, "1"),
            ev("other", "c", Stream::Stdout, "2"),
            ev("dev", "c", Stream::Stdout, "3"),
        ];
        let out = stage.route(7, events, &[0, 1]);
        let msgs =
            |c: &Option<Arc<Chunk>>| c.as_ref().unwrap().events.iter().map(|e| e.message.clone()).collect::<Vec<_>>();
        assert_eq!(msgs(&out[0]), ["1"]);
        assert_eq!(msgs(&out[1]), ["3"]);
        assert_eq!(out[0].as_ref().unwrap().id, 7);
        assert_eq!(m.unmatched.get(), 1);
        // A sink none of the chunk is for gets nothing (and is not waited for).
        let out = stage.route(8, vec![ev("prod-b", "c", Stream::Stdout, "4")], &[0, 1]);
        assert!(out[0].is_some() && out[1].is_none());
    }

    #[test]
    fn without_match_every_sink_shares_one_chunk() {
        let stage = Stage::passthrough();
        let out = stage.route(1, vec![ev("a", "c", Stream::Stdout, "x")], &[0, 1, 2]);
        assert!(Arc::ptr_eq(out[0].as_ref().unwrap(), out[2].as_ref().unwrap()));
        assert!(stage.route(2, Vec::new(), &[0, 1, 2]).iter().all(Option::is_none));
    }

    #[test]
    fn every_transform_counter_starts_at_zero_and_counts_its_drops() {
        let registry = prometheus::Registry::new();
        let m = ProcessMetrics::register(&registry).unwrap();
        let t: Vec<TransformConfig> = serde_yaml_ng::from_str(
            "[{name: drop-debug, type: drop, when: {level: debug}}, {name: never, type: drop, when: {namespace: none}}]",
        )
        .unwrap();
        let mut stage = Stage::new(
            ParseSettings { mode: parse::ParseMode::Auto, use_message_time: false, max_fields: 10 },
            &t,
            Vec::new(),
            Some(m.clone()),
        );
        let mut events = vec![
            ev("a", "c", Stream::Stdout, r#"{"level":"DEBUG","msg":"x"}"#),
            ev("a", "c", Stream::Stdout, "level=info msg=y"),
            ev("a", "c", Stream::Stdout, "plain"),
        ];
        stage.apply(&mut events);
        assert_eq!(events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["y", "plain"]);
        assert_eq!(m.dropped.with_label_values(&["drop-debug"]).get(), 1);
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        assert!(text.contains("vigil_transform_dropped_total{transform=\"never\"} 0"), "{text}");
    }
}
