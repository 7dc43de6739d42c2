#!/usr/bin/env bash
# table.sh [NAME ...]: run configs/NAME.yaml (default: every optimizer config) one after
# another with `-t 2` and print the rows of configs/README.md's "Measured" table: test accuracy
# after the last epoch, the fastest and the median training epoch (epoch 0, the initial
# weights, has no training), and grad_evals per step from the last record. Runs go to
# $OUT (default a temporary directory, removed at the end).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SAMX=${SAMX:-$ROOT/build/cmd/samx}
OUT=${OUT:-}
keep=true
[ -n "$OUT" ] || { OUT=$(mktemp -d /tmp/samx-configs.XXXXXX); keep=false; }
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for f in "$ROOT"/configs/*.yaml; do
        n=$(basename "$f" .yaml)
        case $n in quickstart | fmnist-* | cnn-*) continue ;; esac
        names+=("$n")
    done
fi
echo "| optimizer | config | test acc | s/epoch (fastest) | s/epoch (median) | grad evals/step |"
echo "|---|---|---|---|---|---|"
for n in "${names[@]}"; do
    "$SAMX" run "$ROOT/configs/$n.yaml" -t 2 -q -o "$OUT/$n"
    jq -rs '(map(select(.epoch > 0)) | map(.seconds) | sort) as $s | .[-1] as $l
        | [$l.test_acc, $s[0], $s[($s | length - 1) / 2 | floor], $l.grad_evals / $l.step]
        | @tsv' "$OUT/$n/metrics.jsonl" |
        while IFS=$'\t' read -r acc fast med ge; do
            printf '| %s | `samx run configs/%s.yaml -t 2` | %.4f | %.1f | %.1f | %.3g |\n' \
                "$n" "$n" "$acc" "$fast" "$med" "$ge"
        done
done
$keep || rm -rf "$OUT"
