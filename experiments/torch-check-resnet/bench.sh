#!/bin/sh
# ResNet-20 training speed, samx against PyTorch on the same work (README): 20 SGD steps of
# batch 128 on synthetic 32x32x3 CIFAR-format data (random bytes; speed does not depend on the
# pixels), 2 threads for samx, the best of 1 and 2 threads for PyTorch; an epoch of 50,000
# images is extrapolated from images/s, or timed whole with IMAGES=50000.
# Usage: bench.sh [SAMX] [ROUNDS] [IMAGES (default 2560: 20 steps)]
set -e
here=$(cd "$(dirname "$0")" && pwd)
samx=${1:-$here/../../build/cmd/samx}
rounds=${2:-3}
images=${3:-2560}
tmp=${TMPDIR:-/tmp}/samx-bench-cifar
mkdir -p "$tmp"
[ -f "$tmp/test_batch.bin" ] || /usr/bin/python3 - "$tmp" <<'PY'
import sys, numpy as np
r = np.random.default_rng(0)
for f in ["data_batch_%d.bin" % i for i in range(1, 6)] + ["test_batch.bin"]:
    lab = r.integers(0, 10, 10000).astype(np.uint8)
    pix = r.integers(0, 256, (10000, 3072)).astype(np.uint8)
    open(f"{sys.argv[1]}/{f}", "wb").write(np.concatenate([lab[:, None], pix], 1).tobytes())
PY
cat > "$tmp/bench.yaml" <<EOC
name: bench-resnet20
data: {name: cifar10, dir: $tmp, limit_train: $images, limit_test: 128}
model: {name: resnet, depth: 20}
train: {epochs: 1, batch_size: 128, eval_batch_size: 128}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 5.0e-4}
EOC
# Rounds alternate samx and PyTorch, so both see the same background load.
for r in $(seq "$rounds"); do
    "$samx" run "$tmp/bench.yaml" -o "$tmp/run" -t 2 --force -q
    printf 'samx threads 2: %s images/s\n' \
        "$(tail -1 "$tmp/run/metrics.jsonl" | sed 's/.*"samples_per_second":\([0-9.]*\).*/\1/')"
    /usr/bin/python3 "$here/bench_torch.py" $((images / 128)) 1 2
done
