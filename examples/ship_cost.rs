//! What one metrics-shipping snapshot costs, against a baseline measured in the same run:
//! rendering the same registry as `/metrics` text (what every Prometheus scrape costs).
//!
//! `cargo run --release --example ship_cost [series]` (default 3000 series: a busy node with
//! per-cpu, per-device and per-mount series). Prints the time per snapshot of gather+encode for
//! remote write and of gather+render for `/metrics`, their ratio, and the compressed bytes per
//! sample (what the bounded queue holds during an outage).

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::time::{Duration, Instant};
use vigil::metrics::ship::Snapshot;
use vigil::sinks::remote_write::{RemoteWriteConfig, RemoteWriteSink};

fn registry(series: usize) -> Registry {
    let r = Registry::new();
    let cpu = IntCounterVec::new(Opts::new("node_cpu_seconds_total", "cpu"), &["cpu", "mode"]).unwrap();
    let fs =
        GaugeVec::new(Opts::new("node_filesystem_avail_bytes", "fs"), &["device", "fstype", "mountpoint"]).unwrap();
    let lat = HistogramVec::new(HistogramOpts::new("vigil_sink_request_duration_seconds", "lat"), &["sink"]).unwrap();
    r.register(Box::new(cpu.clone())).unwrap();
    r.register(Box::new(fs.clone())).unwrap();
    r.register(Box::new(lat.clone())).unwrap();
    for s in ["loki", "es"] {
        for i in 0..100 {
            lat.with_label_values(&[s]).observe(i as f64 / 100.0);
        }
    }
    let mut n = 2 * 14; // the two histograms: 11 buckets + +Inf... + sum + count
    let mut i = 0u64;
    while n < series {
        if i % 2 == 0 {
            cpu.with_label_values(&[&(i % 64).to_string(), &format!("mode{}", i / 64)]).inc_by(i * 1000 + 17);
        } else {
            let pod = format!(
                "/var/lib/kubelet/pods/{:08x}-1c2d-4e5f-8a9b-0c1d2e3f4a5b/volumes/kubernetes.io~projected/kube-api-access-{i}",
                i * 2654435761 % 0xffff_ffff
            );
            fs.with_label_values(&["tmpfs", "tmpfs", &pod]).set((i * 4096) as f64);
        }
        i += 1;
        n += 1;
    }
    r
}

fn time_per_iter(min: Duration, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    let start = Instant::now();
    let mut iters = 0u32;
    while start.elapsed() < min || iters < 5 {
        f();
        iters += 1;
    }
    start.elapsed() / iters
}

fn main() {
    let series: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3000);
    let r = registry(series);
    let c: RemoteWriteConfig = serde_yaml_ng::from_str(
        "{name: rw, endpoint: 'http://127.0.0.1:9/api/v1/write', external_labels: {cluster: prod}}",
    )
    .unwrap();
    let ctx = vigil::sinks::SinkContext::new(Registry::new(), "node-0123.example.internal".into()).unwrap();
    let sink = RemoteWriteSink::build(&c, &ctx).unwrap();

    let mut samples = 0;
    let mut bytes = 0;
    let ship = time_per_iter(Duration::from_secs(2), || {
        let snap = Snapshot::gather(&r, "node-0123.example.internal".into());
        let batches = sink.encode(&snap);
        samples = batches.iter().map(|b| b.samples).sum::<usize>();
        bytes = batches.iter().map(|b| b.body.len()).sum::<usize>();
    });
    let gather = time_per_iter(Duration::from_secs(2), || {
        std::hint::black_box(r.gather());
    });
    let families = r.gather();
    let labels = vigil::sinks::remote_write::SeriesLabels {
        node: "node-0123.example.internal".into(),
        external: [("cluster".to_string(), "prod".to_string())].into(),
    };
    let expand = time_per_iter(Duration::from_secs(2), || {
        std::hint::black_box(vigil::sinks::remote_write::series(&families, 0, &labels));
    });
    let mut text_len = 0;
    let scrape = time_per_iter(Duration::from_secs(2), || {
        text_len = vigil::server::render(&r).len();
    });
    println!("series per snapshot:              {samples}");
    println!("/metrics gather+render (baseline): {scrape:?} per scrape, {text_len} bytes of text");
    println!("remote write gather+encode:        {ship:?} per snapshot");
    println!("  of which gather {gather:?}, series expansion {expand:?}");
    println!("ratio ship/scrape:                 {:.2}", ship.as_secs_f64() / scrape.as_secs_f64());
    println!(
        "compressed request:                {bytes} bytes, {:.1} bytes/sample (queue_max_samples=200000 -> {:.1} MiB)",
        bytes as f64 / samples as f64,
        bytes as f64 / samples as f64 * 200_000.0 / (1 << 20) as f64
    );
}
