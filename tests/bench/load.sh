#!/usr/bin/env bash
# load.sh [SAMX]: samx's speed on a quiet machine and on a busy one, in one run.
# The busy machine is one single-threaded busy loop that the script starts in a session of its
# own (so it gets its own scheduling autogroup, as another user's program would; `nice` then
# gives samx no priority over it) and stops again. Figures, each the best of BENCH_ROUNDS
# interleaved rounds (default 2):
#   - MLP: Fashion-MNIST 784-512-512-10, batch 128, SGD momentum; best training-epoch time of 2
#     epochs for samx (1 and 2 threads) and PyTorch 1.13 (1 and 2 threads, tests/bench/torch_mlp.py);
#   - ResNet-20: synthetic CIFAR-format data, batch 128, SGD momentum, 20 steps; images/s of samx
#     on 1 and 2 threads.
# Targets: busy, 2 threads >= 1 thread's rate for both networks and the MLP epoch <= 1.5x
# PyTorch's best under the same load; quiet, the MLP epoch <= 0.5x PyTorch's best (bench.sh
# has the rest of the quiet table). BENCH_WAIT=keep runs samx with libgomp's default wait
# policy instead of samx's (tune.h), for the before/after comparison.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SAMX=$(realpath "${1:-$ROOT/build/cmd/samx}")
T=$(mktemp -d /tmp/samx-load.XXXXXX)
BG=
cleanup() { [ -n "$BG" ] && kill "$BG" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
PY=/usr/bin/python3
[ "${BENCH_WAIT:-}" = keep ] && export SAMX_OMP_WAIT=keep

cat >"$T/mlp.yaml" <<EOF
name: load-mlp
data: {name: fashion-mnist}
model: {name: mlp, hidden: [512, 512]}
train: {epochs: 2, batch_size: 128}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4}
EOF
mkdir -p "$T/cifar"
$PY "$ROOT/tests/bench/synth_cifar.py" "$T/cifar" 2560 128 0
cat >"$T/r20.yaml" <<EOF
name: load-resnet20
data: {name: cifar10, dir: $T/cifar, limit_train: 2560, limit_test: 128}
model: {name: resnet, depth: 20}
train: {epochs: 1, batch_size: 128, eval_batch_size: 128}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 5.0e-4}
EOF

mlp() { # mlp THREADS -> best training-epoch seconds
    "$SAMX" run "$T/mlp.yaml" -o "$T/mlp-$1" -t "$1" -q --force >/dev/null 2>&1 || { echo nan; return; }
    grep -v '"epoch":0,' "$T/mlp-$1/metrics.jsonl" | sed -E 's/.*"seconds":([0-9.e+-]+).*/\1/' | sort -g | head -1
}
r20() { # r20 THREADS -> images/s
    "$SAMX" run "$T/r20.yaml" -o "$T/r20-$1" -t "$1" -q --force >/dev/null 2>&1 || { echo nan; return; }
    tail -1 "$T/r20-$1/metrics.jsonl" | sed -E 's/.*"samples_per_second":([0-9.e+-]+).*/\1/'
}
torch() { $PY "$ROOT/tests/bench/torch_mlp.py" --opt sgd --threads "$1" 2>/dev/null || echo nan; }
has_torch=false
$PY -c 'import torch' 2>/dev/null && has_torch=true
lo() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || (b != "nan" && b + 0 < a + 0)) ? b : a }'; }
hi() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || (b != "nan" && b + 0 > a + 0)) ? b : a }'; }
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
verdict() { awk "BEGIN { exit !($1) }" && echo met || echo MISSED; }
row() { printf '| %-46s | %12s | %-8s | %s |\n' "$1" "$2" "$3" "$4"; }

busy_start() {
    setsid sh -c 'while :; do :; done' &
    BG=$!
    sleep 0.5
}
busy_stop() { kill "$BG" 2>/dev/null; wait "$BG" 2>/dev/null; BG=; sleep 0.5; }

declare -A M P R
for round in $(seq "${BENCH_ROUNDS:-2}"); do
    for state in quiet busy; do
        [ $state = busy ] && busy_start
        for t in 1 2; do
            M[$state$t]=$(lo "${M[$state$t]:-}" "$(mlp $t)")
            R[$state$t]=$(hi "${R[$state$t]:-}" "$(r20 $t)")
            if $has_torch; then P[$state$t]=$(lo "${P[$state$t]:-}" "$(torch $t)"); else P[$state$t]=nan; fi
        done
        [ $state = busy ] && busy_stop
    done
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
     "samx wait policy: $(grep -o '"omp_wait_policy":[^,]*' "$T/mlp-2/meta.json" | cut -d'"' -f4)"
echo
row "figure" "measured" "target" "verdict"
row "---" "---" "---" "---"
for state in quiet busy; do
    pbest=$(lo "${P[${state}1]}" "${P[${state}2]}")
    row "$state: samx MLP epoch, 1 / 2 threads (s)" "$(calc "${M[${state}1]}") / $(calc "${M[${state}2]}")" "" ""
    row "$state: PyTorch MLP epoch, 1 / 2 threads (s)" "${P[${state}1]} / ${P[${state}2]}" "" ""
    row "$state: samx ResNet-20, 1 / 2 threads (images/s)" "$(calc "${R[${state}1]}") / $(calc "${R[${state}2]}")" "" ""
    if [ $state = quiet ]; then
        row "quiet: samx MLP / PyTorch's best" "$(calc "${M[quiet2]} / $pbest")" "<= 0.5" "$(verdict "${M[quiet2]} / $pbest <= 0.5")"
    else
        best=$(lo "${M[busy1]}" "${M[busy2]}")
        row "busy: MLP 2-thread rate / 1-thread rate" "$(calc "${M[busy1]} / ${M[busy2]}")" ">= 1" "$(verdict "${M[busy1]} / ${M[busy2]} >= 1")"
        row "busy: ResNet-20 2-thread rate / 1-thread rate" "$(calc "${R[busy2]} / ${R[busy1]}")" ">= 1" "$(verdict "${R[busy2]} / ${R[busy1]} >= 1")"
        row "busy: samx MLP (2 threads) / PyTorch's best" "$(calc "${M[busy2]} / $pbest")" "<= 1.5" "$(verdict "${M[busy2]} / $pbest <= 1.5")"
        row "busy: samx MLP (best of 1, 2 threads) / PyTorch's best" "$(calc "$best / $pbest")" "" ""
    fi
done
