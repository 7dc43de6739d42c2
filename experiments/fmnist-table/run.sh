#!/usr/bin/env bash
# run.sh: regenerate the Fashion-MNIST table from scratch: every method of the SAM family and its
# baselines on the MLP 784-512-512-10, 5 epochs (configs/<method>.yaml), 5 seeds, clean labels and
# 20% / 40% symmetric label noise. 150 runs through `samx sweep -j 2` (1 thread each); reruns
# skip finished runs and resume interrupted ones. Writes table.md beside this script.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SAMX=${SAMX:-$ROOT/build/cmd/samx}
OUT=${OUT:-$ROOT/results/fmnist-table}
METHODS=${METHODS:-"sgd sam asam wsam crsam samar gsam vasso looksam esam"}
JOBS=${JOBS:-2}
t0=$(date +%s)
for m in $METHODS; do
    "$SAMX" sweep "$ROOT/configs/$m.yaml" seed=0..4 data.label_noise=0,0.2,0.4 -j "$JOBS" -o "$OUT"
done
t1=$(date +%s)
group=(--group optimizer.name,data.label_noise)
{
    echo "# Fashion-MNIST MLP, 5 epochs: test accuracy (mean ± std over seeds, n runs)"
    echo
    "$SAMX" table "$OUT" "${group[@]}" --metric test_acc --format md
    echo
    echo "## Gradient evaluations per run (5 epochs of 469 steps)"
    echo
    "$SAMX" table "$OUT" "${group[@]}" --metric grad_evals --format md
    echo
    echo "## Training throughput (examples per second, 1 thread, two runs at once)"
    echo
    "$SAMX" table "$OUT" "${group[@]}" --metric samples_per_second --format md
    echo
    echo "Wall time of the sweeps: $((t1 - t0)) s on $(nproc) cores ($(date -u +%Y-%m-%d))."
    echo "Command: experiments/fmnist-table/run.sh"
} >"$(dirname "$0")/table.md"
cat "$(dirname "$0")/table.md"
