#!/usr/bin/env bash
# The chaos soak (issue 15, "Lose nothing"): the long version of every scenario in
# tests/chaos.rs, on a release build, one scenario at a time, then the table of lost, duplicated
# and reordered lines per scenario and sink (README, "Chaos soak").
#
#   scripts/chaos.sh [SECONDS] [TEST-NAME-FILTER]
#
# SECONDS (default 300) is the chaos phase of each scenario (writing while vigil is killed,
# rotated under, etc.); the sink outages last 20 s and 5 min whatever it is. The checkpoint
# scenario mounts a tmpfs and needs root (CAP_SYS_ADMIN); elsewhere it prints why it skipped.
# Exits non-zero when any scenario lost a line (or broke another of its assertions).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-300}
filter=${2:-}
table=$(mktemp)
trap 'rm -f "$table"' EXIT

# The binary under test is the release build; the harness itself (writers, receivers,
# checker) runs as an ordinary test build, which spares a second optimised (LTO) build.
cargo build --release --locked --bin vigil
status=0
VIGIL_BIN=$PWD/target/release/vigil VIGIL_CHAOS_SECS=$secs VIGIL_CHAOS_TABLE=$table \
  cargo test --locked --test chaos -- --ignored --nocapture --test-threads 1 $filter || status=$?

echo
echo "Chaos soak: VIGIL_CHAOS_SECS=$secs, release build, $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
cat "$table"
exit $status
