# syntax=docker/dockerfile:1
# vigil's container image: a release build on Debian 12 (bookworm), run on distroless/cc
# (glibc, libgcc, CA certificates, no shell, no package manager). The build and run stages
# share the same Debian release, so the binary's glibc matches.
#
#   docker build -t vigil:0.1.0 .
#
# Checked statically by tests/deploy_dockerfile.rs (COPY sources, binary path, port) and linted
# with hadolint; README.md "Deploying" shows how to load the image into kind or minikube.

ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Only what `cargo build` reads (.dockerignore also keeps the rest out of the context).
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
# Declared [[bench]] targets must exist for cargo to read the manifest.
COPY benches ./benches
# The cache mounts keep the crates.io download and the target directory between builds; the
# binary is copied out of the cached target directory, which does not outlive this RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin vigil \
    && install -D -m 0755 target/release/vigil /out/vigil

# :nonroot (uid 65532) is the image's default for ad-hoc runs. The DaemonSet runs it as uid 0
# with every capability dropped, because container log files are root-only (0640); see
# manifests/base/daemonset.yaml.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vigil" \
      org.opencontainers.image.description="Kubernetes node agent: tails container logs, exports node metrics, ships both" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/vigil /usr/local/bin/vigil
# metrics.listen's default, 0.0.0.0:9102: /metrics, /healthz, /readyz.
EXPOSE 9102
ENTRYPOINT ["/usr/local/bin/vigil"]
# Without --config, vigil runs its embedded default config (standard node paths, stdout sink).
CMD ["run"]
