#!/usr/bin/env bash
# sweep_j.sh [SAMX]: total wall time of `samx sweep -j J` for J = 1, 2, 4 on the same 8 short
# runs: Fashion-MNIST MLP 784-256-256-10, 12,800 training images, 2 epochs, seeds
# 0..7. samx sweep gives each run max(1, cores / J) threads. Run it on an otherwise idle machine.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SAMX=$(realpath "${1:-$ROOT/build/cmd/samx}")
T=$(mktemp -d /tmp/samx-sweepj.XXXXXX)
trap 'rm -rf "$T"' EXIT
cat >"$T/s.yaml" <<EOF
name: sweepj
data: {name: fashion-mnist, limit_train: 12800, limit_test: 1000}
model: {name: mlp, hidden: [256, 256]}
train: {epochs: 2, batch_size: 128}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
EOF
echo "machine: $(nproc) cores; 8 runs; threads per run = max(1, cores / J)"
printf '| J | threads per run | wall s |\n|---|---|---|\n'
for j in 1 2 4; do
    rm -rf "$T/results"
    t0=$(date +%s.%N)
    (cd "$T" && "$SAMX" sweep s.yaml seed=0..7 -j $j >/dev/null 2>&1) || echo "sweep -j $j failed"
    t1=$(date +%s.%N)
    th=$(( $(nproc) / j )); [ $th -lt 1 ] && th=1
    printf '| %d | %d | %s |\n' $j $th "$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")"
done
