#!/bin/sh
# scaled-cnn.sh FOLDER METHOD [SAMX] [THREADS]: the scaled (Fashion-MNIST, small CNN) comparison of
# experiments/FOLDER: SGD, SAM and METHOD, one seed,
# run one after another, then the table of the README (final and best test accuracy, wall
# time). Runs already completed are skipped (the same configs across the wsam/, crsam/ and
# samar/ folders share the SGD and SAM runs). Each folder's run.sh calls this with its method.
set -e
here=$(cd "$(dirname "$0")/../$1" && pwd)
method=$2
shift 2
root=$(cd "$here/../.." && pwd)
samx=${1:-$root/build/cmd/samx}
threads=${2:-2}
cd "$root"
for m in sgd sam "$method"; do
    "$samx" run "$here/fmnist-cnn-$m.yaml" -t "$threads" -q
done
echo "| method | test acc (final) | test acc (best) | train loss | wall s | grad evals |"
echo "|---|---|---|---|---|---|"
for m in sgd sam "$method"; do
    dir=$("$samx" run "$here/fmnist-cnn-$m.yaml" --dry-run | sed -n "s/.* into '\(.*\)'$/\1/p")
    /usr/bin/python3 - "$dir/summary.json" "$m" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
f, b = s["final"], s["best"] or s["final"]
import glob, os
best = max(json.loads(l)["test_acc"] for l in open(os.path.join(os.path.dirname(sys.argv[1]),
                                                                "metrics.jsonl")))
print(f"| {sys.argv[2]} | {f['test_acc']:.4f} | {best:.4f} | {f['train_loss']:.4f} | "
      f"{s['wall_seconds']:.0f} | {s['grad_evals']:.0f} |")
PY
done
