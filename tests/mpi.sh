#!/usr/bin/env bash
# mpi.sh SAMX mpi|nompi: data parallelism over MPI processes (lib/dist.h) end to end.
#   - np 2 twice: byte-identical records (timing aside) and weights;
#   - np 2 and np 3 against one process without mpirun: every record's losses and gradient
#     norm within a relative 1e-5 (only the order of the sums over ranks differs), accuracies
#     within 1/64, for an MLP with SGD, with SAM, with m-sharpness (SAM m: 16), CR-SAM, GSAM,
#     a BatchNorm CNN and ResNet-8 with SAM, and an MLP with every eval: measurement (probe
#     sets sharded; landscape and density files compared too); weights differ by rounding only;
#   - ghost BatchNorm (train.bn_group): np 2 equals one process; groups that would span
#     processes are a config error;
#   - every rank ends with the same weights and BatchNorm running statistics (SAMX_DIST_WEIGHTS);
#   - only rank 0 writes: ranks started in their own working directories, only rank 0's gets a
#     results/ tree; meta.json records world_size and the hosts;
#   - a resume with another number of processes is refused (exit 2), with the same one it works;
#   - SIGTERM to one rank stops every rank at the same step (exit 130) and the resume is exact;
#   - a batch smaller than the job is a config error (exit 2); a rank that fails alone (its
#     config unreadable; rank 0's disk full) ends the job with its message instead of hanging.
#   - np 1 under mpirun is byte for byte one process without it (and, with --nompi, both are
#     the run of a build without MPI).
# Skipped (TAP skip) when samx was built without MPI or mpirun is missing.
set -u
SAMX=$(realpath "$1")
. "$(dirname "$0")/tap.sh"
if [ "${2:-}" != mpi ]; then
    skip "samx built without MPI (meson option mpi)"
    tap_done
    exit
fi
if ! command -v mpirun >/dev/null; then
    skip "mpirun not installed (Debian openmpi-bin)"
    tap_done
    exit
fi
T=$(mktemp -d /tmp/samx-mpi.XXXXXX)
trap 'rm -rf "$T"' EXIT
# Root needs --allow-run-as-root; more ranks than cores need --oversubscribe. One thread per
# rank: the machine running the tests may have two cores.
MPIRUN=(mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS=1)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
np() { local k=$1; shift; "${MPIRUN[@]}" -np "$k" "$SAMX" "$@"; }

cfg() { # cfg NAME MODEL OPTIMIZER [TRAIN]
    cat >"$T/$1.yaml" <<EOF
name: $1
seed: 1
data: {name: fashion-mnist, limit_train: 512, limit_test: 128}
model: $2
train: ${4:-{epochs: 1, batch_size: 64, eval_batch_size: 128\}}
optimizer: $3
EOF
}
SGD='{name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4}'
cfg mlp '{name: mlp, hidden: [64]}' "$SGD"
cfg mlp-sam '{name: mlp, hidden: [64], activation: gelu}' "{name: sam, rho: 0.05, base: $SGD}"
cfg mlp-msam '{name: mlp, hidden: [64]}' "{name: sam, rho: 0.05, m: 16, base: $SGD}"
# batch 50 of 540 examples: 10 * 50 + 40, so the last batch is split unevenly too (40 over 3
# ranks). (With 512, a last batch of 12 normalised over 12 examples made one process's
# rounding and the shards' differ by 3e-5 in the record: rounding amplified, not a difference
# of method.)
cfg cnn '{name: cnn, channels: [4, 8], batchnorm: true}' "{name: sam, rho: 0.05, base: $SGD}" \
    '{epochs: 1, batch_size: 50, eval_batch_size: 128}'
sed -i 's/limit_train: 512/limit_train: 540/' "$T/cnn.yaml"
cfg mlp-crsam '{name: mlp, hidden: [64], activation: gelu}' \
    "{name: crsam, rho: 0.1, gamma: 0.1, beta: 0.01, base: $SGD}"
cfg mlp-gsam '{name: mlp, hidden: [64]}' "{name: gsam, rho: 0.05, rho_min: 0.05, alpha: 0.4, base: $SGD}"
cfg resnet '{name: resnet, depth: 8, width: 4}' "{name: sam, rho: 0.05, base: $SGD}"
# m-sharpness groups are dealt out whole (optim.h optim_groups): batch 50 in groups of 10 is
# 3 + 2 groups on np 2 and 2 + 2 + 1 on np 3; the last batch (12: groups of 10 and 2) leaves
# np 3's last process without a group. BatchNorm's running statistics come from the log of
# every process's groups (model.h struct model_runlog): with train.bn_update all_passes CR-SAM
# logs three updates per group, ghost BatchNorm (groups of 2) with train.accumulate (calls of
# m = 16 in micro-batches of 12 and 4) one per ghost group.
cfg cnn-msam '{name: cnn, channels: [4, 8], batchnorm: true}' \
    "{name: sam, rho: 0.05, m: 10, base: $SGD}" '{epochs: 1, batch_size: 50, eval_batch_size: 128}'
cfg cnn-crsam-m '{name: cnn, channels: [4, 8], batchnorm: true}' \
    "{name: crsam, rho: 0.1, gamma: 0.1, beta: 0.01, m: 16, base: $SGD}" \
    '{epochs: 1, batch_size: 64, eval_batch_size: 128, bn_update: all_passes}'
cfg cnn-ghost-m '{name: cnn, channels: [4, 8], batchnorm: true}' \
    "{name: sam, rho: 0.05, m: 16, base: $SGD}" \
    '{epochs: 1, batch_size: 48, eval_batch_size: 128, bn_group: 2, accumulate: 4}'
cfg mlp-gsam-m '{name: mlp, hidden: [64]}' \
    "{name: gsam, rho: 0.05, rho_min: 0.05, alpha: 0.4, m: 16, base: $SGD}"
cfg mlp-rsam-m '{name: mlp, hidden: [64]}' "{name: rsam, rho: 0.05, m: 16, base: $SGD}"
cfg mlp-wsam-m '{name: mlp, hidden: [64]}' "{name: wsam, rho: 0.05, gamma: 0.9, m: 16, base: $SGD}"
# the eval: measurements, each on its probe set sharded over the ranks; fixed probe and
# iteration counts, so rounding cannot change how many there are
cfg mlp-eval '{name: mlp, hidden: [64], activation: gelu}' "{name: sam, rho: 0.05, base: $SGD}"
cat >>"$T/mlp-eval.yaml" <<EOF
eval:
  hessian_trace: {examples: 300, rel_err: 0, probes: 6}
  lambda_max: {examples: 300, iters: 8, tol: 0, k: 2}
  sharpness: {examples: 300, m: 100, steps: 3}
  hessian_density: {examples: 300, steps: 6, bins: 50}
  landscape: {examples: 300, points: 5}
EOF

same() { # same DIR-A DIR-B: records (timing aside) and weights identical
    cmp -s <(strip_timing "$1/metrics.jsonl") <(strip_timing "$2/metrics.jsonl") &&
        cmp -s "$1/model.safetensors" "$2/model.safetensors"
}
close() { # close DIR-A DIR-B: the records' numbers within rounding of the sums' order
    python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b), "record counts differ"
worst = 0.0
for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys(), "record keys differ"
    for k in ra:
        if k.endswith("seconds") or k == "samples_per_second" or not isinstance(ra[k], (int, float)):
            continue
        x, y = float(ra[k]), float(rb[k])
        if k.endswith("_acc"):
            assert abs(x - y) <= 1 / 64, f"{k}: {x} vs {y}"
        elif k.endswith("_rel_change"):  # a difference of nearly equal numbers
            assert abs(x - y) <= 1e-6, f"epoch {ra['epoch']} {k}: {x} vs {y}"
        else:
            rel = abs(x - y) / max(abs(y), 1e-30)
            worst = max(worst, rel)
            assert rel <= 1e-5, f"epoch {ra['epoch']} {k}: {x} vs {y} (relative {rel:.2e})"
print(f"worst relative difference {worst:.1e}")
PY
}
ranks_same() { # ranks_same DIR N: every rank's weights dump equals rank 0's
    local r
    for ((r = 1; r < $2; r++)); do
        cmp -s "$1/rank-0.f32" "$1/rank-$r.f32" || return 1
    done
    [ -s "$1/rank-0.f32" ]
}

# mpi.sh SAMX mpi --nompi SAMX_NOMPI: only the check that a run of the MPI build, alone and as
# np 1 under mpirun, is byte for byte the run of a build without MPI (meson -Dmpi=disabled).
if [ "${3:-}" = --nompi ]; then
    NOMPI=$(realpath "$4")
    "$NOMPI" run -q -t 1 "$T/cnn.yaml" -o "$T/nompi" 2>"$T/err"
    ok $? "the build without MPI runs $(head -c 200 "$T/err")"
    "$SAMX" run -q -t 1 "$T/cnn.yaml" -o "$T/alone" && same "$T/nompi" "$T/alone"
    ok $? "cnn: the MPI build without mpirun is byte for byte the build without MPI"
    OMP_NUM_THREADS=1 np 1 run -q -t 1 "$T/cnn.yaml" -o "$T/np1" && same "$T/nompi" "$T/np1"
    ok $? "cnn: np 1 under mpirun is byte for byte the build without MPI"
    tap_done
    exit
fi

for c in mlp mlp-sam mlp-msam cnn mlp-crsam mlp-gsam resnet mlp-eval cnn-msam cnn-crsam-m \
    cnn-ghost-m mlp-gsam-m mlp-rsam-m mlp-wsam-m; do
    "$SAMX" run -q -t 1 "$T/$c.yaml" -o "$T/$c-1"
    ok $? "$c: one process without mpirun runs"
    for k in 2 3; do
        mkdir -p "$T/$c-$k-w"
        SAMX_DIST_WEIGHTS="$T/$c-$k-w" np $k run -q "$T/$c.yaml" -o "$T/$c-$k" 2>"$T/err"
        ok $? "$c: np $k runs $(head -c 300 "$T/err")"
        msg=$(close "$T/$c-$k" "$T/$c-1" 2>&1)
        ok $? "$c: np $k equals one process within 1e-5 relative: $msg"
        ranks_same "$T/$c-$k-w" $k
        ok $? "$c: np $k: every rank ends with the same weights and running statistics"
    done
    np 2 run -q "$T/$c.yaml" -o "$T/$c-2b"
    same "$T/$c-2" "$T/$c-2b"
    ok $? "$c: np 2 twice gives byte-identical records and weights"
done
python3 - "$T/mlp-eval-1" "$T/mlp-eval-2" <<'PY'
import csv, glob, os, sys
a, b = sys.argv[1:]
files = sorted(os.path.relpath(f, a)
               for f in glob.glob(a + "/landscape/*.csv") + glob.glob(a + "/density/*.csv"))
assert files, "no landscape or density files"
worst = 0.0
for f in files:
    ra = list(csv.reader(open(os.path.join(a, f))))
    rb = list(csv.reader(open(os.path.join(b, f))))
    assert len(ra) == len(rb) and ra[0] == rb[0], f
    for x, y in zip(ra[1:], rb[1:]):
        for u, v in zip(x, y):
            u, v = float(u), float(v)
            worst = max(worst, abs(u - v) / max(abs(v), 1e-3))
assert worst <= 1e-4, f"worst {worst:.1e}"
print(f"# {len(files)} files, worst {worst:.1e}")
PY
ok $? "mlp-eval: np 2's landscape and density files equal one process's within rounding"
np 1 run -q "$T/cnn.yaml" -o "$T/cnn-np1"
same "$T/cnn-1" "$T/cnn-np1"
ok $? "cnn: np 1 under mpirun is byte for byte the run without mpirun"
! cmp -s "$T/cnn-1/model.safetensors" "$T/cnn-2/model.safetensors"
ok $? "cnn: np 2's weights are not np 1's bytes (the comparisons above can fail)"

# Ghost BatchNorm (train.bn_group 16, batch 64): np 2 keeps every group in one process and
# equals one process; np 3 would split groups (shares start at examples 22 and 43): exit 2.
sed -e 's/batch_size: 50,/batch_size: 64, bn_group: 16,/' -e 's/limit_train: 540/limit_train: 512/' \
    "$T/cnn.yaml" >"$T/ghost.yaml"
mkdir -p "$T/ghost-2-w"
"$SAMX" run -q -t 1 "$T/ghost.yaml" -o "$T/ghost-1" &&
    SAMX_DIST_WEIGHTS="$T/ghost-2-w" np 2 run -q "$T/ghost.yaml" -o "$T/ghost-2" 2>"$T/err"
ok $? "ghost BatchNorm: one process and np 2 run $(head -c 300 "$T/err")"
msg=$(close "$T/ghost-2" "$T/ghost-1" 2>&1)
ok $? "ghost BatchNorm: np 2 equals one process within 1e-5 relative: $msg"
ranks_same "$T/ghost-2-w" 2
ok $? "ghost BatchNorm: np 2: both ranks end with the same weights and running statistics"
! cmp -s "$T/ghost-1/model.safetensors" "$T/cnn-1/model.safetensors"
ok $? "ghost BatchNorm: other weights than the whole batch's statistics"
np 3 run -q "$T/ghost.yaml" -o "$T/ghost-3" 2>"$T/err"
rc=$?
[ $rc -eq 2 ] && grep -q "ghost.yaml:5:[0-9]*: 'train.bn_group' 16 splits the model calls of 64 examples" "$T/err"
ok $? "ghost BatchNorm: np 3 would split groups across processes: exit 2 ($rc) $(head -c 300 "$T/err")"

# m = the per-process batch (batch 60: m 30 on np 2, m 20 on np 3): every process perturbs with
# its own shard's gradient, as on an accelerator pod, and the run equals one process's with the
# same m. A batch of fewer groups than processes is a config error naming optimizer.m.
for k in 2 3; do
    sed -e "s/batch_size: 64,/batch_size: 60,/" -e "s/name: sam, rho: 0.05,/&  m: $((60 / k)),/" \
        "$T/mlp-sam.yaml" >"$T/rank-m$k.yaml"
    mkdir -p "$T/rank-m$k-w"
    "$SAMX" run -q -t 1 "$T/rank-m$k.yaml" -o "$T/rank-m$k-1" &&
        SAMX_DIST_WEIGHTS="$T/rank-m$k-w" np $k run -q "$T/rank-m$k.yaml" -o "$T/rank-m$k" \
            2>"$T/err"
    ok $? "SAM with m = the per-process batch ($((60 / k))): one process and np $k run $(head -c 300 "$T/err")"
    msg=$(close "$T/rank-m$k" "$T/rank-m$k-1" 2>&1)
    ok $? "SAM with m = the per-process batch: np $k equals one process with that m: $msg"
    ranks_same "$T/rank-m$k-w" $k
    ok $? "SAM with m = the per-process batch: np $k: every rank ends with the same weights"
done
! cmp -s "$T/rank-m2-1/model.safetensors" "$T/rank-m3-1/model.safetensors"
ok $? "SAM with m 30 and m 20: other weights (m is examples per perturbation)"
sed "s/m: 20,/m: 32,/" "$T/rank-m3.yaml" >"$T/rank-m32.yaml"
np 3 run -q "$T/rank-m32.yaml" -o "$T/rank-m32" 2>"$T/err"
rc=$?
[ $rc -eq 2 ] && grep -q "rank-m32.yaml:6:[0-9]*: 'optimizer.m' 32 makes 2 perturbation groups of a batch of 60, fewer than the 3 processes" "$T/err" && [ "$(grep -c '^samx: ' "$T/err")" -eq 1 ]
ok $? "np 3 with 2 groups a batch: exit 2, one line naming optimizer.m ($rc) $(grep samx "$T/err" | head -c 300)"

# Only rank 0 writes: each rank in its own working directory, results/ relative to it.
mkdir -p "$T/w0" "$T/w1"
"${MPIRUN[@]}" -np 2 bash -c 'cd "$1/w$OMPI_COMM_WORLD_RANK" && exec "$2" run -q "$1/mlp.yaml"' \
    _ "$T" "$SAMX"
ok $? "np 2 with a working directory per rank runs"
[ -d "$T/w0/results/mlp" ] && [ -z "$(ls -A "$T/w1")" ]
ok $? "only rank 0 writes a run directory (rank 1's working directory stays empty)"
m=$(ls "$T"/w0/results/mlp/*/meta.json)
w=$(jq -r '.world_size, (.hosts | length), (.rank_threads | length)' "$m" | tr '\n' ' ')
[ "$w" = "2 2 2 " ]
ok $? "meta.json records world_size 2, the hosts and the threads of both ranks"
[ "$(jq -r .world_size "$T/mlp-1/meta.json")" = 1 ]
ok $? "one process records world_size 1"
# One group of a run by one process and runs by 2 and 3: samx table warns and counts them.
mkdir -p "$T/mix/mlp"
cp -r "$T/mlp-1" "$T/mix/mlp/a" && cp -r "$T/mlp-2" "$T/mix/mlp/b" && cp -r "$T/mlp-3" "$T/mix/mlp/c"
"$SAMX" table "$T/mix" 2>"$T/err" >/dev/null
test $? -eq 0 && [ "$(wc -l <"$T/err")" -eq 1 ] &&
    grep -q "^samx: warning: 1 group mixes BLAS cores, work splits or MPI world sizes, so its runs are not bit-comparable (1 run with [A-Za-z]*/[0-9]* blocks in one process, 1 run with [A-Za-z]*/[0-9]* blocks on 2 MPI processes, 1 run with [A-Za-z]*/[0-9]* blocks on 3 MPI processes)$" "$T/err"
ok $? "table: a group mixing 1, 2 and 3 processes gets one warning with the counts ($(head -c 300 "$T/err"))"

# Resume with another number of processes: refused with a config error; the same one works.
np 2 run -q "$T/mlp.yaml" -o "$T/res"
rm "$T/res/summary.json"
"$SAMX" run -q "$T/mlp.yaml" -o "$T/res" 2>"$T/err"
rc=$?
[ $rc -eq 2 ] && one_error "$T/err" "trained by 2 processes, this run has 1"
ok $? "a resume by one process of a 2-process checkpoint: exit 2 ($rc) $(cat "$T/err")"
np 3 run -q "$T/mlp.yaml" -o "$T/res" 2>"$T/err"
rc=$?
[ $rc -eq 2 ] && grep -q "trained by 2 processes, this run has 3" "$T/err"
ok $? "a resume by 3 processes of a 2-process checkpoint: exit 2 ($rc)"
np 2 run -q "$T/mlp.yaml" -o "$T/res" && [ -f "$T/res/summary.json" ]
ok $? "the same number of processes finishes it"

# SIGTERM to rank 1 alone: the ranks agree on the stop, stop at the same step, rank 0
# checkpoints, the job exits 130, and the resumed run is byte for byte the uninterrupted one.
cat >"$T/long.yaml" <<EOF
name: long
seed: 1
data: {name: fashion-mnist, limit_train: 1024, limit_test: 128}
model: {name: mlp, hidden: [256]}
train: {epochs: 12, batch_size: 16, eval_batch_size: 128}
optimizer: {name: sam, rho: 0.05, base: $SGD}
EOF
# The signal goes at the first record, so a fast machine still has 11 epochs left to stop in.
np 2 run -q "$T/long.yaml" -o "$T/sig" 2>/dev/null &
job=$!
for _ in $(seq 600); do
    [ -s "$T/sig/metrics.jsonl" ] && break
    sleep 0.1
done
for p in $(pgrep -f "^$SAMX run -q $T/long.yaml"); do
    grep -qz '^OMPI_COMM_WORLD_RANK=1$' "/proc/$p/environ" 2>/dev/null && kill -TERM "$p"
done
wait $job
rc=$?
[ $rc -eq 130 ] && [ "$(jq -r .status "$T/sig/summary.json")" = interrupted ]
ok $? "SIGTERM to rank 1 only: the job checkpoints and exits 130 ($rc)"
np 2 run -q "$T/long.yaml" -o "$T/sig" && np 2 run -q "$T/long.yaml" -o "$T/sig-full" &&
    same "$T/sig" "$T/sig-full"
ok $? "the resumed 2-process run equals the uninterrupted one byte for byte"

# A rank that fails alone ends the job with its message, never a hang: rank 1 cannot read
# its config; with a full disk (a small tmpfs, as root), rank 0 cannot write its checkpoint.
timeout 60 "${MPIRUN[@]}" -np 2 bash -c 'c=$2; [ "$OMPI_COMM_WORLD_RANK" = 1 ] && c=$2.missing
    exec "$1" run -q "$c" -o "$3"' _ "$SAMX" "$T/mlp.yaml" "$T/fail" 2>"$T/err"
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] &&
    grep -q "^samx: error (rank 1 of 2): cannot read '$T/mlp.yaml.missing'" "$T/err"
ok $? "rank 1 failing alone to build: the job fails ($rc, not a timeout) with rank 1's message"
if [ "$(id -u)" -eq 0 ] && mkdir -p "$T/tfs" && mount -t tmpfs -o size=300k tmpfs "$T/tfs"; then
    timeout 60 "${MPIRUN[@]}" -np 2 "$SAMX" run -q "$T/long.yaml" -o "$T/tfs/run" 2>"$T/err"
    rc=$?
    umount "$T/tfs"
    [ $rc -eq 1 ] && grep -q "^samx: error (rank 0 of 2): cannot write .*No space left" "$T/err"
    ok $? "rank 0 failing alone to write its checkpoint: the job is aborted, exit 1 ($rc)"
else
    skip "a full disk needs root (a small tmpfs)"
fi

np 3 run -q "$T/mlp.yaml" -o "$T/small" train.batch_size=2 2>"$T/err"
rc=$?
[ $rc -eq 2 ] && grep -q "fewer than the 3 processes" "$T/err"
ok $? "a batch smaller than the job: exit 2 ($rc) $(head -c 200 "$T/err")"

tap_done
