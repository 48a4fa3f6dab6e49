#!/usr/bin/env bash
# Regenerates src/sinks/otlp/proto/*.rs from the OTLP .proto files vendored in proto/opentelemetry
# (opentelemetry-proto v1.10.0, Apache-2.0). Run after updating those files; commit the output.
#
# Why committed code instead of a build.rs: the generated structs never change between builds,
# and prost-build + a protoc in every build would cost each build (and every developer and CI)
# tens of seconds and a toolchain for files that change once a year.
#
# Needs: cargo, and protoc (Debian: apt-get install protobuf-compiler).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo/src/sinks/otlp/proto"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$out"
cat > "$work/Cargo.toml" <<'TOML'
[package]
name = "gen-otlp-proto"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
prost-build = "0.14"
TOML
cat > "$work/src/main.rs" <<'RS'
fn main() {
    let mut args = std::env::args().skip(1);
    let (root, out) = (args.next().unwrap(), args.next().unwrap());
    let files: Vec<String> = [
        "common/v1/common.proto",
        "resource/v1/resource.proto",
        "logs/v1/logs.proto",
        "metrics/v1/metrics.proto",
        "collector/logs/v1/logs_service.proto",
        "collector/metrics/v1/metrics_service.proto",
    ]
    .iter()
    .map(|f| format!("{root}/opentelemetry/proto/{f}"))
    .collect();
    prost_build::Config::new()
        .out_dir(&out)
        // The spec's prose lives in the vendored .proto files; as Rust doc comments its indented
        // examples would become doctests.
        .disable_comments(["."])
        .compile_protos(&files, &[root])
        .expect("protoc and prost-build succeed");
}
RS
rm -f "$out"/opentelemetry.proto.*.rs
cargo run --quiet --manifest-path "$work/Cargo.toml" -- "$repo/proto" "$out"
ls "$out"
