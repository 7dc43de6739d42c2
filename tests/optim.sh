#!/usr/bin/env bash
# optim.sh SAMX: the optimizers' user-visible settings through `samx run` / `samx check`, as TAP:
# train.l2, optimizer.perturb (SAM-ON) on a BatchNorm model, clipped un-normalized SAM, and the
# methods fsam, msam, gam, lookbehind, fishersam, rsam (their cost in grad_evals); bad values are
# config errors at file:line:column. Tiny Fashion-MNIST configs.
set -u
SAMX=$(realpath "$1")
T=$(mktemp -d /tmp/samx-optim.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/tap.sh"
cd "$T" || exit 1

# tiny.yaml with OPT as the optimizer mapping and TRAIN added to train:
tiny() { # tiny FILE MODEL OPT [TRAIN]
    cat >"$1" <<EOC
name: tiny
data: {name: fashion-mnist, limit_train: 200, limit_test: 100}
model: $2
train: {epochs: 2, batch_size: 50${4:+, $4}}
optimizer: $3
EOC
}
MLP='{name: mlp, hidden: [16]}'
CNN='{name: cnn, channels: [4, 8]}'
SGD='base: {name: sgd, lr: 0.05, momentum: 0.9}'
w_of() { od -An -tx1 "$1/model.safetensors" | md5sum | cut -d' ' -f1; }

# --- train.l2 -----------------------------------------------------------------------------------
tiny l2.yaml "$MLP" "{name: sam, $SGD}" "l2: 0.01"
"$SAMX" run l2.yaml -o "$T/l2" -q -t 1 2>"$T/err"
ok $? "train.l2 0.01 runs ($(head -c 200 "$T/err"))"
tiny plain.yaml "$MLP" "{name: sam, $SGD}"
"$SAMX" run plain.yaml -o "$T/plain" -q -t 1 2>"$T/err"
ok $? "the same run without train.l2"
[ "$(w_of "$T/l2")" != "$(w_of "$T/plain")" ]
ok $? "train.l2 changes the trained weights"
# epoch 0 is before any step: its train_loss is the data loss in both runs (the L2 term is not
# in the recorded loss), while its grad_norm includes l2 * w
[ "$(jq -s '.[0].train_loss' "$T/l2/metrics.jsonl")" = "$(jq -s '.[0].train_loss' "$T/plain/metrics.jsonl")" ]
ok $? "train.l2: the recorded train_loss is the data loss (epoch 0 equal)"
[ "$(jq -s '.[0].grad_norm' "$T/l2/metrics.jsonl")" != "$(jq -s '.[0].grad_norm' "$T/plain/metrics.jsonl")" ]
ok $? "train.l2: grad_norm includes l2 * w (epoch 0 differs)"
"$SAMX" check l2.yaml 2>/dev/null | grep -q '^  l2: 0.01$'
ok $? "train.l2 is in the resolved config"
"$SAMX" check plain.yaml 2>/dev/null | grep -q 'l2:'
[ $? -ne 0 ]
ok $? "a config without train.l2 resolves without it (its run id is unchanged)"
tiny bad.yaml "$MLP" "{name: sam, $SGD}" "l2: -0.5"
"$SAMX" check bad.yaml >/dev/null 2>"$T/err"
[ $? -eq 2 ] && one_error "$T/err" "bad.yaml:4:[0-9]*: 'train.l2' must be in"
ok $? "train.l2 < 0: exit 2, one line at file:line:column ($(cat "$T/err"))"

# --- optimizer.perturb (SAM-ON) -----------------------------------------------------------------
for f in norm no_norm all; do
    tiny "p-$f.yaml" "$CNN" "{name: sam, rho: 0.5, perturb: $f, $SGD}"
    "$SAMX" run "p-$f.yaml" -o "$T/p-$f" -q -t 1 2>"$T/err"
    ok $? "cnn sam perturb: $f runs ($(head -c 200 "$T/err"))"
done
[ "$(w_of "$T/p-norm")" != "$(w_of "$T/p-no_norm")" ] && [ "$(w_of "$T/p-norm")" != "$(w_of "$T/p-all")" ]
ok $? "perturb norm, no_norm and all train different weights"
"$SAMX" check p-norm.yaml 2>/dev/null | grep -q '^  perturb: norm$'
ok $? "perturb is in the resolved config"
tiny bad.yaml "$MLP" "{name: sam, perturb: norm, $SGD}"
"$SAMX" check bad.yaml >/dev/null 2>"$T/err"
[ $? -eq 2 ] && one_error "$T/err" "bad.yaml:5:[0-9]*: 'optimizer.perturb: norm' selects no parameter"
ok $? "perturb: norm on an MLP (no normalization layers): exit 2 at file:line:column ($(cat "$T/err"))"
tiny bad.yaml "$CNN" "{name: gsam, perturb: bn, $SGD}"
"$SAMX" check bad.yaml >/dev/null 2>"$T/err"
[ $? -eq 2 ] && one_error "$T/err" "bad.yaml:5:[0-9]*: .*no_norm"
ok $? "perturb: an unknown filter lists the choices ($(cat "$T/err"))"
tiny bad.yaml "$CNN" "{name: sgd, perturb: norm}"
"$SAMX" check bad.yaml >/dev/null 2>"$T/err"
[ $? -eq 2 ] && one_error "$T/err" "unknown key 'optimizer.perturb'"
ok $? "perturb on a base optimizer is an unknown key ($(cat "$T/err"))"

# --- clipped un-normalized SAM, adaptive gsam / wsam ----------------------------------------------
tiny clip.yaml "$MLP" "{name: sam, rho: 0.1, normalize: false, clip: true, $SGD}"
"$SAMX" run clip.yaml -o "$T/clip" -q -t 1 2>"$T/err"
ok $? "sam normalize: false, clip: true runs ($(head -c 200 "$T/err"))"
tiny bad.yaml "$MLP" "{name: sam, clip: true, $SGD}"
"$SAMX" check bad.yaml >/dev/null 2>"$T/err"
[ $? -eq 2 ] && one_error "$T/err" "bad.yaml:5:[0-9]*: .*normalize: false"
ok $? "clip without normalize: false: exit 2 at file:line:column ($(cat "$T/err"))"
for m in gsam wsam; do
    tiny "ad-$m.yaml" "$MLP" "{name: $m, rho: 0.5, adaptive: true, $SGD}"
    "$SAMX" run "ad-$m.yaml" -o "$T/ad-$m" -q -t 1 2>"$T/err"
    ok $? "$m adaptive: true runs ($(head -c 200 "$T/err"))"
done

# --- fsam, msam, gam, lookbehind, fishersam: they run; grad_evals is their cost (4 steps an epoch)
for spec in "fsam 2" "msam 1" "gam 4" "lookbehind 4" "fishersam 2"; do
    set -- $spec
    tiny "$1.yaml" "$MLP" "{name: $1, $SGD}"
    "$SAMX" run "$1.yaml" -o "$T/$1" -q -t 1 2>"$T/err"
    ok $? "$1 runs ($(head -c 200 "$T/err"))"
    [ "$(jq -r .status "$T/$1/summary.json")" = completed ] &&
        [ "$(jq -s '.[2].grad_evals' "$T/$1/metrics.jsonl")" = "$(($2 * 8))" ]
    ok $? "$1: completed, grad_evals after 8 steps = $(($2 * 8)) ($(jq -s '.[2].grad_evals' "$T/$1/metrics.jsonl"))"
    "$SAMX" list optimizers | grep -q "^  $1 (SAM family): .*" &&
        "$SAMX" list optimizers | grep -A1 "^  $1 (SAM family)" | grep -q "paper: .*arXiv"
    ok $? "samx list optimizers shows $1 with its paper"
done
jq -e -s '.[2] | has("train_loss_perturbed") or has("sharpness_1step") or has("nonfinite")' \
    "$T/msam/metrics.jsonl" >/dev/null
[ $? -eq 1 ]
ok $? "msam (no pass at w): no train_loss_perturbed or sharpness_1step in its records"
jq -e -s '.[2] | has("train_loss_perturbed") and has("sharpness_1step")' "$T/gam/metrics.jsonl" \
    >/dev/null
ok $? "gam records train_loss_perturbed and sharpness_1step"
tiny bad.yaml "$MLP" "{name: msam, base: {name: adamw}}"
"$SAMX" check bad.yaml >/dev/null 2>"$T/err"
[ $? -eq 2 ] && one_error "$T/err" "bad.yaml:5:[0-9]*: 'msam' perturbs along"
ok $? "msam over adamw: exit 2 at file:line:column ($(cat "$T/err"))"
tiny bad.yaml "$MLP" "{name: fsam, lambda: 1.5, $SGD}"
"$SAMX" check bad.yaml >/dev/null 2>"$T/err"
[ $? -eq 2 ] && one_error "$T/err" "bad.yaml:5:[0-9]*: .*lambda"
ok $? "fsam lambda > 1: exit 2 at file:line:column ($(cat "$T/err"))"

# --- rsam: runs (MLP; CNN with filter-wise noise on conv and BatchNorm tensors, perturb, m) ------
tiny rsam.yaml "$MLP" "{name: rsam, sigma: 0.01, $SGD}"
"$SAMX" run rsam.yaml -o "$T/rsam" -q -t 1 2>"$T/err"
ok $? "rsam runs ($(head -c 200 "$T/err"))"
[ "$(jq -r .status "$T/rsam/summary.json")" = completed ] &&
    [ "$(jq -s '.[2].grad_evals' "$T/rsam/metrics.jsonl")" = 16 ]
ok $? "rsam: completed, grad_evals after 8 steps = 16 ($(jq -s '.[2].grad_evals' "$T/rsam/metrics.jsonl"))"
"$SAMX" list optimizers | grep -A1 "^  rsam (SAM family)" | grep -q "paper: Liu et al., NeurIPS 2022"
ok $? "samx list optimizers shows rsam with its paper"
jq -e -s '.[2] | has("train_loss_perturbed") or has("sharpness_1step")' \
    "$T/rsam/metrics.jsonl" >/dev/null
[ $? -eq 1 ]
ok $? "rsam (no pass at w): no train_loss_perturbed or sharpness_1step in its records"
tiny rsam0.yaml "$MLP" "{name: rsam, sigma: 0, $SGD}"
"$SAMX" run rsam0.yaml -o "$T/rsam0" -q -t 1 2>"$T/err"
[ $? -eq 0 ] && [ "$(w_of "$T/rsam")" != "$(w_of "$T/rsam0")" ]
ok $? "rsam: sigma 0.01 and sigma 0 train different weights"
tiny rsam-cnn.yaml "$CNN" "{name: rsam, sigma: 0.01, m: 25, perturb: no_norm, $SGD}"
"$SAMX" run rsam-cnn.yaml -o "$T/rsam-cnn" -q -t 2 2>"$T/err" &&
    "$SAMX" run rsam-cnn.yaml -o "$T/rsam-cnn2" -q -t 2 2>>"$T/err"
[ $? -eq 0 ] && [ "$(w_of "$T/rsam-cnn")" = "$(w_of "$T/rsam-cnn2")" ] &&
    [ "$(jq -s '.[2].grad_evals' "$T/rsam-cnn/metrics.jsonl")" = 16 ]
ok $? "rsam on a CNN with m: 25, perturb: no_norm: runs, twice the same weights (the noise is seeded) ($(head -c 200 "$T/err"))"
tiny bad.yaml "$MLP" "{name: rsam, sigma: -1, $SGD}"
"$SAMX" check bad.yaml >/dev/null 2>"$T/err"
[ $? -eq 2 ] && one_error "$T/err" "bad.yaml:5:[0-9]*: .*sigma"
ok $? "rsam sigma < 0: exit 2 at file:line:column ($(cat "$T/err"))"
tiny bad.yaml "$MLP" "{name: rsam, noise: gaussian, $SGD}"
"$SAMX" check bad.yaml >/dev/null 2>"$T/err"
[ $? -eq 2 ] && one_error "$T/err" "bad.yaml:5:[0-9]*: .*filter, plain"
ok $? "rsam unknown noise: exit 2 at file:line:column ($(cat "$T/err"))"
tap_done
