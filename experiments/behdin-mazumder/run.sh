#!/usr/bin/env bash
# Regenerate the behdin-mazumder study from scratch: data, samx runs, closed forms, agreement
# check, table and figure. Usage (from anywhere):
#     experiments/behdin-mazumder/run.sh
# Environment: SAMX (default: <repo>/build/cmd/samx), JOBS (parallel samx runs, default 2),
# PYTHON (default /usr/bin/python3, needs numpy), WORK (scratch folder for data and run
# directories; default a fresh folder under /dev/shm, removed at the end unless KEEP=1).
# Exit status: 0 all exact agreement checks passed; 3 a check FAILED; other: an error.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
SAMX=${SAMX:-$repo/build/cmd/samx}
JOBS=${JOBS:-2}
PYTHON=${PYTHON:-/usr/bin/python3}
[[ $SAMX = /* ]] || SAMX=$repo/$SAMX
[ -x "$SAMX" ] || { echo "run.sh: no samx binary at $SAMX (build it, or set SAMX)" >&2; exit 1; }
"$PYTHON" -c 'import numpy' || { echo "run.sh: $PYTHON has no numpy" >&2; exit 1; }
command -v gnuplot >/dev/null || echo "run.sh: gnuplot not found; data and script are still written" >&2

t0=$(date +%s.%N)
if [ -z "${WORK:-}" ]; then
    base=/dev/shm; [ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
    WORK=$(mktemp -d "$base/samx-bm.XXXXXX")      # tmpfs: samx fsyncs its run files
    [ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
fi
out=$here/results
mkdir -p "$out"

echo "== data and run list ($WORK)"
"$PYTHON" "$here/bm.py" setup "$WORK" "$SAMX"

echo "== samx runs ($(wc -l <"$WORK/cmds") runs, $JOBS at a time, 1 thread each)"
t1=$(date +%s.%N)
tr '\n' '\0' <"$WORK/cmds" | xargs -0 -P "$JOBS" -n 1 sh -c 'eval "$0" || { echo "FAILED: $0" >&2; exit 255; }'
t2=$(date +%s.%N)

echo "== closed forms and agreement"
rc=0
"$PYTHON" "$here/bm.py" analyze "$WORK" "$out" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || exit "$rc"

echo "== figure"
if command -v gnuplot >/dev/null; then (cd "$out" && gnuplot "$here/figure.gp"); fi

t3=$(date +%s.%N)
wall=$(awk -v a="$t0" -v b="$t3" 'BEGIN{printf "%.1f", b-a}')
runs=$(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.1f", b-a}')
{
    echo
    echo "## Timing"
    echo
    echo "run.sh wall time $wall s, of which samx runs $runs s ($(wc -l <"$WORK/cmds") runs," \
         "JOBS=$JOBS, $(nproc) cores; the machine was shared with other work)."
} >>"$out/results.md"
echo "run.sh: wall $wall s (samx runs $runs s); results in $out"
if [ "$rc" -eq 3 ]; then
    echo "run.sh: FAIL: samx and the closed form disagree beyond tolerance (see above)" >&2
    exit 3
fi
echo "run.sh: all exact agreement checks passed"
