//! The log source, the pipeline and the Elasticsearch sink together, against the in-process
//! `_bulk` server, which keeps documents by `_id` and answers 409 to a second `create` with
//! the same `_id`, as Elasticsearch does. What a line loses when two lines share an `_id` is
//! only visible here: the sink counts a 409 as delivered.

mod logs_common;
mod support;

use logs_common::{config, cri, wait_for};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use support::es::EsServer;
use tokio::sync::mpsc;
use vigil::logs::LogSource;
use vigil::pipeline::{Acker, Chunk, Pipeline};
use vigil::sinks::Sink;
use vigil::sinks::elasticsearch::{ElasticsearchConfig, ElasticsearchSink};

const WAIT: Duration = Duration::from_secs(30);

struct Running {
    source: LogSource,
    pipeline: Pipeline,
    sink: tokio::task::JoinHandle<()>,
}

async fn start(cfg: &vigil::logs::config::ContainersConfig, es: &EsServer) -> Running {
    let yaml = format!("name: es\nendpoint: {}\nbatch: {{timeout: 20ms}}\n", es.url());
    let c: ElasticsearchConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let (ctx, _) = support::context();
    let sink: Box<dyn Sink> = Box::new(ElasticsearchSink::new(&c, &ctx).unwrap());
    let registry = prometheus::Registry::new();
    let (acker, ack_rx) = Acker::channel();
    let (sink_tx, sink_rx) = mpsc::channel::<Arc<Chunk>>(4);
    let sink = tokio::spawn(sink.run(sink_rx, acker));
    let (src_tx, src_rx) = mpsc::channel(4);
    let pipeline = Pipeline::start(src_rx, vec![sink_tx], ack_rx, None);
    let source = LogSource::start(cfg, "node-a".into(), &registry, src_tx, pipeline.committed.clone()).unwrap();
    Running { source, pipeline, sink }
}

async fn stop(r: Running) {
    let Running { mut source, pipeline, sink } = r;
    source.stop_intake().await;
    pipeline.join().await;
    sink.await.unwrap();
    source.finish().await;
}

fn lines(what: &str, range: std::ops::Range<usize>) -> String {
    // Fixed width: the lines after the truncation sit at exactly the offsets of the old ones.
    range.map(|k| cri("stdout", "F", &format!("{what} {k:05} {}", "x".repeat(40)))).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Regression (issue 15): the file key, and so the `_id` (node, file key, offset), survived a
/// copytruncate: the lines written after it got the `_id`s of the old lines, Elasticsearch
/// answered 409, vigil counted them as delivered and they were never stored. And the lines
/// written just before the truncation, left in the copy, were never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_is_stored_across_copytruncates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("node");
    let cfg = config(&root, &dir.path().join("cp"));
    let pod = root.join("pods/ns_p_uid/c");
    std::fs::create_dir_all(&pod).unwrap();
    let live = pod.join("0.log");
    let mut w = std::fs::OpenOptions::new().create(true).append(true).open(&live).unwrap();
    let es = EsServer::start().await;
    let r = start(&cfg, &es).await;

    let mut want = Vec::new();
    let mut write = |what: &str, range: std::ops::Range<usize>, want: &mut Vec<String>| {
        let text = lines(what, range);
        w.write_all(text.as_bytes()).unwrap();
        want.extend(text.lines().map(|l| l.splitn(4, ' ').nth(3).unwrap().to_string()));
    };
    for round in 0..3 {
        let before = format!("old{round}");
        write(&before, 0..400, &mut want);
        assert!(
            wait_for(WAIT, || es.messages().len() >= want.len()).await,
            "round {round}: lines not stored: {} of {}",
            es.messages().len(),
            want.len()
        );
        // Written just before the truncation: still unread when it happens.
        write(&before, 400..500, &mut want);
        let copy = pod.join("0.log.1");
        std::fs::copy(&live, &copy).unwrap();
        std::fs::OpenOptions::new().write(true).open(&live).unwrap().set_len(0).unwrap();
        // And written again right away, past the old offset, racing vigil's next look.
        write(&format!("new{round}"), 0..600, &mut want);
        // logrotate's next turn moves the copy on.
        assert!(
            wait_for(WAIT, || es.messages().len() >= want.len()).await,
            "round {round}: {} of {} lines stored",
            es.messages().len(),
            want.len()
        );
        std::fs::rename(&copy, pod.join(format!("0.log.{}", round + 2))).unwrap();
    }
    stop(r).await;
    let st = es.state.lock().unwrap();
    assert!(st.bad_requests.is_empty(), "{:?}", st.bad_requests);
    drop(st);
    assert_eq!(sorted(es.messages()), sorted(want), "every line stored once, under an _id of its own");
}
