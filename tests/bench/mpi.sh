#!/usr/bin/env bash
# mpi.sh [SAMX]: what data parallelism over MPI processes costs on one machine: one process
# with 2 threads against `mpirun -np 2` with 1 thread each, the same run, interleaved
# (BENCH_ROUNDS rounds, default 2, best of each):
#   - MLP: Fashion-MNIST 784-512-512-10 (670k weights), batch 128, SGD momentum: best
#     training-epoch time of 2 epochs;
#   - ResNet-20: synthetic CIFAR-format data (the cost does not depend on the pixels), batch
#     128, SGD momentum, 20 steps: images/s;
# and, for the np 2 runs, SAMX_DIST_TRACE's count, bytes and seconds of the sums over the
# processes as a fraction of the run's time (the records' seconds, measurements included).
# Needs a samx built with MPI and mpirun; prints a markdown table.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SAMX=$(realpath "${1:-$ROOT/build/cmd/samx}")
T=$(mktemp -d /tmp/samx-benchmpi.XXXXXX)
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
command -v mpirun >/dev/null || { echo "mpi.sh: no mpirun (Debian openmpi-bin)" >&2; exit 1; }
MPIRUN=(mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x SAMX_DIST_TRACE=1)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)

cat >"$T/mlp.yaml" <<YAML
name: bench-mpi-mlp
data: {name: fashion-mnist}
model: {name: mlp, hidden: [512, 512]}
train: {epochs: 2, batch_size: 128}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4}
YAML
mkdir -p "$T/cifar"
$PY "$ROOT/tests/bench/synth_cifar.py" "$T/cifar" 2560 128 0
cat >"$T/r20.yaml" <<YAML
name: bench-mpi-resnet20
data: {name: cifar10, dir: $T/cifar, limit_train: 2560, limit_test: 128}
model: {name: resnet, depth: 20}
train: {epochs: 1, batch_size: 128, eval_batch_size: 128}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 5.0e-4}
YAML

# run NET WAY -> "figure trace-seconds run-seconds sums MB": WAY is t2 (one process, 2 threads)
# or np2 (2 processes, 1 thread each); figure: best epoch seconds (mlp) or images/s (r20)
run() {
    local d="$T/$1-$2" trace="- - - -"
    if [ "$2" = t2 ]; then
        "$SAMX" run "$T/$1.yaml" -o "$d" -t 2 -q --force >/dev/null 2>&1 || { echo nan; return; }
    else
        "${MPIRUN[@]}" -np 2 "$SAMX" run "$T/$1.yaml" -o "$d" -t 1 -q --force >/dev/null 2>"$T/err" ||
            { echo nan; return; }
        # "samx: dist: N sums, X MB sent by each of 2 processes, S s in sums on rank 0 ..."
        trace=$(sed -nE 's/^samx: dist: ([0-9]+) sums, ([0-9.]+) MB .*, ([0-9.]+) s in sums on rank 0.*/\3 \1 \2/p' "$T/err")
    fi
    jq -rs --arg net "$1" --arg tr "$trace" '
        (if $net == "mlp" then [.[] | select(.epoch > 0) | .seconds] | min
         else .[-1].samples_per_second end) as $fig
        | ([.[] | .seconds] | add) as $total
        | "\($fig) \($total) \($tr)"' "$d/metrics.jsonl"
}
lo() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || (b != "nan" && b + 0 < a + 0)) ? b : a }'; }
hi() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || (b != "nan" && b + 0 > a + 0)) ? b : a }'; }
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
row() { printf '| %-58s | %16s |\n' "$1" "$2"; }

declare -A F TR
for round in $(seq "${BENCH_ROUNDS:-2}"); do
    for net in mlp r20; do
        for way in t2 np2; do
            read -r fig total tsec tcalls tmb <<<"$(run $net $way)"
            if [ $net = mlp ]; then new=$(lo "${F[$net$way]:-}" "$fig"); else new=$(hi "${F[$net$way]:-}" "$fig"); fi
            # keep the trace of the round that gave the best figure
            [ "$new" = "$fig" ] && [ $way = np2 ] && TR[$net]="$tsec $total $tcalls $tmb"
            F[$net$way]=$new
        done
    done
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
row "figure" "measured"
row "---" "---"
row "MLP epoch: 1 process x 2 threads / np 2 x 1 thread (s)" "$(calc "${F[mlpt2]}") / $(calc "${F[mlpnp2]}")"
row "MLP: np 2 x 1 thread rate / 1 x 2 threads rate" "$(calc "${F[mlpt2]} / ${F[mlpnp2]}")"
row "ResNet-20: 1 x 2 threads / np 2 x 1 thread (images/s)" "$(calc "${F[r20t2]}") / $(calc "${F[r20np2]}")"
row "ResNet-20: np 2 x 1 thread rate / 1 x 2 threads rate" "$(calc "${F[r20np2]} / ${F[r20t2]}")"
for net in mlp r20; do
    read -r tsec total tcalls tmb <<<"${TR[$net]:-- - - -}"
    steps=$([ $net = mlp ] && echo 938 || echo 20)
    row "$net np 2: sums / their time / fraction of the run's time" \
        "$tcalls / $(calc "$tsec") s / $(calc "$tsec / $total")"
    row "$net np 2: MB sent by each process; per training step" "$tmb / $(calc "$tmb / $steps")"
done

# --- the cost model for a cluster ------------------------------------------------------------------
# One SGD step of a job of N processes sums the gradient (P floats) once (SAM: twice, one per
# closure pass) and, per pass, each BatchNorm layer's statistics three times (two sums forward,
# one backward) and the loss once. A sum is an all-to-all of slices then an all-gather
# (lib/dist.c): each process sends and receives 2 (N - 1) / N x 4P bytes, in 2 (N - 1)
# messages (Open MPI's pairwise and ring algorithms), so
#   T_sum(bytes) = 2 (N - 1) / N x bytes / B + 2 (N - 1) alpha
# with link bandwidth B and per-message latency alpha (ALPHA_US, default 20 us: TCP over
# Ethernet). Compute: a ResNet-18 step on one 2-thread process with the per-process batch
# 128 / N, measured here (synthetic CIFAR, R18_STEPS steps, best step). Prediction for a CIFAR
# epoch (391 steps of 128) on N two-core nodes at 10 and 25 Gbit/s.
[ "${BENCH_R18:-1}" = 0 ] && exit 0
$PY "$ROOT/tests/bench/synth_cifar.py" "$T/cifar" 512 16 1
r18_step() { # r18_step BATCH -> best seconds per step, and the parameter count
    local b=$1 steps=${R18_STEPS:-4}
    cat >"$T/r18.yaml" <<YAML
name: bench-mpi-resnet18
data: {name: cifar10, dir: $T/cifar, limit_train: $((b * steps)), limit_test: 16}
model: {name: resnet, depth: 18}
train: {epochs: 1, batch_size: $b, eval_batch_size: 16}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
YAML
    "$SAMX" run "$T/r18.yaml" -o "$T/r18-$b" -t 2 --force 2>"$T/r18err" >/dev/null || { echo nan 0; return; }
    local p
    p=$(sed -nE 's/.* ([0-9]+) parameters.*/\1/p' "$T/r18err" | head -1)
    jq -rs --arg p "$p" --argjson b "$b" '.[-1].samples_per_second as $r | "\($b / $r) \($p)"' \
        "$T/r18-$b/metrics.jsonl"
}
echo
echo "ResNet-18 CIFAR epoch on N two-core nodes, global batch 128 (alpha ${ALPHA_US:-20} us):"
echo
printf '| %5s | %10s | %18s | %27s | %27s |\n' N "batch/node" "compute s/step" \
    "SGD epoch 10 / 25 Gbit/s" "SAM epoch 10 / 25 Gbit/s"
printf '| %5s | %10s | %18s | %27s | %27s |\n' --- --- --- --- ---
for n in 1 8 32 128; do
    b=$((128 / n))
    read -r comp p <<<"$(r18_step $b)"
    awk -v n=$n -v b=$b -v c="$comp" -v p="$p" -v a="${ALPHA_US:-20}" 'BEGIN {
        bn = 20; alpha = a * 1e-6
        split("10 25", gb, " ")
        for (k = 1; k <= 2; k++) {
            B = gb[k] * 1e9 / 8
            if (n == 1) { t = 0 } else {
                grad = 2 * (n - 1) / n * 4 * p / B + 2 * (n - 1) * alpha
                small = (3 * bn + 1) * 2 * (n - 1) * alpha
                t = grad + small
            }
            sgd[k] = 391 * (c + t) / 60; sam[k] = 391 * (2 * c + 2 * t) / 60
        }
        printf "| %5d | %10d | %18.3f | %12.1f / %-12.1f | %12.1f / %-12.1f |\n", n, b, c, \
            sgd[1], sgd[2], sam[1], sam[2]
    }'
done
echo "(epoch minutes; SAM counted as two passes' compute and communication)"
