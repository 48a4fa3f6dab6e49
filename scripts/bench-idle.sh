#!/usr/bin/env bash
# Idle cost, peak RSS and start-up of the release vigil over N idle container log files.
#
#   scripts/bench-idle.sh [N=1000] [IDLE_SECS=30]     (VIGIL=path overrides target/release/vigil)
#
# Writes N CRI files (one line each) under a temp dir, runs `vigil run` with a file sink and
# prints: the cold start (all N lines shipped, no checkpoint), the CPU share of one core while
# every file is idle (utime+stime ticks from /proc/<pid>/stat over IDLE_SECS), VmHWM (peak RSS)
# and the idle RSS split into anonymous and file-backed pages,
# and the start-up with a checkpoint (SIGTERM, one new line appended to the last file, restart:
# time until that line is in the sink). Build first: cargo build --release --bin vigil
# PROFILE_SECS=10 adds a syscall count (strace -c) and a perf profile of the idle process.
set -euo pipefail
N=${1:-1000}
IDLE_SECS=${2:-30}
VIGIL=${VIGIL:-target/release/vigil}
[ -x "$VIGIL" ] || { echo "build first: cargo build --release --bin vigil ($VIGIL missing)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/vigil-bench-idle.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

python3 - "$work/node" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = f"{root}/pods/ns_pod{i}_uid{i}/c"
    os.makedirs(d)
    with open(f"{d}/0.log", "w") as f:
        f.write(f"2026-11-30T03:00:00.000000000Z stdout F line of file {i}\n")
PY
cat > "$work/vigil.yaml" <<YAML
node_name: bench
sources:
  containers:
    include: ["$work/node/pods/*/*/*.log"]
    checkpoint_dir: $work/cp
sinks:
  - name: out
    type: file
    path: $work/out.ndjson
    max_bytes: 0
metrics:
  listen: 127.0.0.1:0
log:
  level: warn
YAML

now() { date +%s.%N; }
lines() { [ -f "$work/out.ndjson" ] && wc -l < "$work/out.ndjson" || echo 0; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_lines() { # wait until the sink holds $1 lines (at most 120 s)
  local until=$(( $(date +%s) + 120 ))
  while [ "$(lines)" -lt "$1" ]; do
    [ "$(date +%s)" -lt "$until" ] || { echo "timed out waiting for $1 lines (have $(lines))" >&2; exit 1; }
    sleep 0.02
  done
}

t0=$(now)
"$VIGIL" run --config "$work/vigil.yaml" >/dev/null 2>"$work/vigil.err" & pid=$!
wait_lines "$N"
cold=$(echo "$(now) - $t0" | bc)
sleep 3 # checkpoints written, every file caught up
hz=$(getconf CLK_TCK)
a=$(ticks "$pid"); sleep "$IDLE_SECS"; b=$(ticks "$pid")
idle=$(echo "scale=3; ($b - $a) * 100 / $hz / $IDLE_SECS" | bc)
hwm=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
# Anonymous memory (heap, stacks) apart from file-backed pages (mostly the binary's own code:
# a `measure` binary's are ~2.5-3 MB more than the fat-LTO release binary's; stripping changes
# nothing, the debug line tables are never paged in).
split=$(awk '/RssAnon/ {a = $2} /RssFile/ {f = $2} END {printf "anon=%.1fMB file=%.1fMB", a / 1024, f / 1024}' "/proc/$pid/status")
if [ -n "${PROFILE_SECS:-}" ]; then # where idle time goes: syscalls, then CPU samples
  timeout -s INT "$PROFILE_SECS" strace -c -f -p "$pid" 2>&1 | head -20 || true
  perf record -q -g -o "$work/perf.data" -p "$pid" -- sleep "$PROFILE_SECS" 2>/dev/null || true
  echo "--- idle profile"
  perf report -q -i "$work/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -v '^$' | grep '%' | head -25 || true
fi
kill -TERM "$pid"; wait "$pid" || true; pid=

last=$(ls -d "$work"/node/pods/*/c | tail -1)/0.log
echo "2026-11-30T03:00:01.000000000Z stdout F after restart" >> "$last"
t0=$(now)
perfpid=
if [ -n "${PROFILE_SECS:-}" ]; then
  # Started under perf: `perf record -p` after the start would miss the threads spawned later
  # (the tailer among them).
  perf record -q -g -o "$work/perf-start.data" -- "$VIGIL" run --config "$work/vigil.yaml" >/dev/null 2>>"$work/vigil.err" & perfpid=$!
  until pid=$(pgrep -P "$perfpid"); do sleep 0.01; done
else
  "$VIGIL" run --config "$work/vigil.yaml" >/dev/null 2>>"$work/vigil.err" & pid=$!
fi
wait_lines "$((N + 1))"
warm=$(echo "$(now) - $t0" | bc)
hwm2=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
if [ -n "$perfpid" ]; then
  wait "$perfpid" || true
  echo "--- start-up profile (from the restart to the stop after the first new line)"
  perf report -q -i "$work/perf-start.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep '%' | head -25 || true
fi
pid=
[ "$(lines)" -eq "$((N + 1))" ] || echo "warning: $(lines) lines shipped, want $((N + 1)) (duplicates after restart?)" >&2

printf "files=%d idle_cpu=%s%%_of_a_core (over %ss) peak_rss=%sMB (idle: %s) cold_start_all_lines=%.2fs restart_with_checkpoint_first_line=%.2fs (rss %sMB)\n" \
  "$N" "$idle" "$IDLE_SECS" "$hwm" "$split" "$cold" "$warm" "$hwm2"
