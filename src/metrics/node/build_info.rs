//! `node_exporter_build_info`: node_exporter's identity series, answered by vigil so that
//! dashboards which pick their instances with `label_values(node_exporter_build_info, instance)`
//! (the node mixin's "USE Method / Node", "Node Exporter Full") list vigil's nodes too.
//!
//! It says what it is: `version` and `vigil_version` are vigil's version and `tags` is `vigil`;
//! node_exporter's Go-specific labels are left out (`goversion`, `branch`, `revision`: an empty
//! label is no label in Prometheus) except `goos`/`goarch`, given in Go's spelling so a panel
//! grouping by them reads the same. Rejected: a `vigil_build_info`-only answer (the picker
//! would stay empty) and pretending to be a node_exporter release (a version that never was).

use super::Family;

/// Go's GOARCH for this build's target.
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

pub(super) fn family() -> Family {
    let mut f = Family::gauge(
        "node_exporter_build_info",
        "A metric with a constant '1' value labeled by version and goos and goarch; exported by vigil (vigil_version) for dashboards that select node_exporter instances by it.",
    );
    let version = env!("CARGO_PKG_VERSION");
    f.push(
        &[
            ("goarch", goarch()),
            ("goos", std::env::consts::OS),
            ("tags", "vigil"),
            ("version", version),
            ("vigil_version", version),
        ],
        1.0,
    );
    f.finish()
}
