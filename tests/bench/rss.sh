#!/usr/bin/env bash
# rss.sh [SAMX]: peak resident memory of ResNet-18 (CIFAR variant) training, samx against
# PyTorch 1.13 on the same work: two SGD steps of batch 128 on 32x32x3 inputs, 2 threads
# (samx: 256 synthetic CIFAR-format training images, one epoch; PyTorch: two steps on random
# tensors). Prints both peaks (GNU time's maximum RSS) and their ratio; target <= 1.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SAMX=$(realpath "${1:-$ROOT/build/cmd/samx}")
T=$(mktemp -d /tmp/samx-rss.XXXXXX)
trap 'rm -rf "$T"' EXIT
/usr/bin/python3 - "$T" <<'PY'
import sys, numpy as np
r = np.random.default_rng(0)
for f, n in [("data_batch_%d.bin" % i, 256 if i == 1 else 1) for i in range(1, 6)] + [("test_batch.bin", 128)]:
    lab = r.integers(0, 10, n).astype(np.uint8)
    pix = r.integers(0, 256, (n, 3072)).astype(np.uint8)
    open(f"{sys.argv[1]}/{f}", "wb").write(np.concatenate([lab[:, None], pix], 1).tobytes())
PY
cat >"$T/r18.yaml" <<EOF2
name: rss18
data: {name: cifar10, dir: $T, limit_train: 256, limit_test: 128}
model: {name: resnet, depth: 18}
train: {epochs: 1, batch_size: 128, eval_batch_size: 128}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 5.0e-4}
EOF2
cat >"$T/t18.py" <<EOF2
import sys, torch, torch.nn.functional as F
sys.path.insert(0, "$ROOT/experiments/torch-check-resnet")
from check import ResNet
torch.set_num_threads(2)
net = ResNet(2, [64, 128, 256, 512], "B")
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
x = torch.randn(128, 3, 32, 32); y = torch.randint(0, 10, (128,))
net.train()
for i in range(2):
    opt.zero_grad(); F.cross_entropy(net(x), y).backward(); opt.step()
EOF2
/usr/bin/time -f %M -o "$T/s" "$SAMX" run "$T/r18.yaml" -o "$T/run" -t 2 -q || exit 1
/usr/bin/time -f %M -o "$T/p" /usr/bin/python3 "$T/t18.py" || exit 1
s=$(cat "$T/s"); p=$(cat "$T/p")
awk -v s="$s" -v p="$p" 'BEGIN { printf "ResNet-18 batch 128 peak RSS: samx %.0f MB, PyTorch %.0f MB, samx / PyTorch = %.2f (target <= 1: %s)\n", s / 1024, p / 1024, s / p, s <= p ? "met" : "MISSED" }'
