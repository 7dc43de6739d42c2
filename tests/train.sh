#!/usr/bin/env bash
# train.sh SAMX: training-loop features and Hessian measurements through the command line, as TAP.
#   train.accumulate: the accumulated step equals the unaccumulated one up to rounding (final
#     weights, every method family: plain, SAM, m-sharpness, forward-only ranking, three
#     passes), BatchNorm models use micro-batch statistics (deterministic, and not the
#     full-batch run), peak memory falls with k, and a k that does not divide the batch is a
#     config error;
#   train.keep_best / train.early_stop: best.safetensors is the model of the best epoch (byte
#     for byte a run trained that many epochs), the stop follows the rule recomputed here from
#     the records, status 'stopped' everywhere, a rerun and a resume know it, an interrupted
#     run resumes to the same records, test-set metrics need allow_test, bad values are errors
#     at file:line:column; samx table --at best:NAME takes the recorded best;
#   eval.hessian_density / hessian_trace: the files and keys, gnuplot draws the density, bad
#     values are errors at file:line:column.
set -u
SAMX=$(realpath "$1")
T=$(mktemp -d /tmp/samx-train.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/tap.sh"
cd "$T" || exit 1

# Python (standard library only) for the checks on binary files.
PY=/usr/bin/python3
have_py() { [ -x $PY ]; }
# Largest |a - b| / max|a| over the F32 tensors of two safetensors files.
st_diff() {
    $PY - "$1" "$2" <<'EOF'
import array, json, struct, sys
def load(p):
    b = open(p, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop('__metadata__', None)
    out = {}
    for k, v in h.items():
        a = array.array('f')
        a.frombytes(b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]])
        out[k] = a
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys()
print('%.3g' % max(max(abs(x - y) for x, y in zip(a[k], b[k])) / max(max(abs(x) for x in a[k]), 1e-30)
                   for k in a))
EOF
}
# STATUS of the last command is $1, its stderr one "samx: error:" line matching $2
expect_err() { [ "$1" -eq 2 ] && one_error err "$2"; }

# --- gradient accumulation ------------------------------------------------------------------------
cat >acc.yaml <<'EOF'
name: acc
seed: 2
data: {name: synthetic-linear, n_train: 120, n_test: 40, features: 6}
model: {name: mlp, hidden: [16, 12], activation: tanh}
train: {epochs: 3, batch_size: 24}
optimizer: {name: sam, rho: 0.05, base: {name: sgd, lr: 0.05, momentum: 0.9}}
EOF
for opt in "optimizer.name=sgd optimizer.lr=0.05 optimizer.momentum=0.9" \
           "optimizer.rho=0.05" "optimizer.m=12" "optimizer.name=esam" "optimizer.name=crsam"; do
    set -- $opt
    if [ "$1" = "optimizer.name=sgd" ]; then
        base=(optimizer="{name: sgd, lr: 0.05, momentum: 0.9}")
    else
        base=("$@")
    fi
    "$SAMX" run acc.yaml "${base[@]}" -o k1 -q --force -t 2 &&
        "$SAMX" run acc.yaml "${base[@]}" train.accumulate=4 -o k4 -q --force -t 2
    rc=$?
    if have_py; then
        d=$(st_diff k1/model.safetensors k4/model.safetensors 2>/dev/null || echo nan)
        # 1e-4: ten momentum steps amplify the gradient sums' other order (2.1e-5 measured on one
    # machine, less on another); a group statistic or update that differed would be ~1e-2.
    $PY -c "import sys; sys.exit(not (float('$d') <= 1e-4))"
        ok $((rc | $?)) "accumulate 4 = the unaccumulated step ($opt): largest relative weight difference $d after 15 steps"
    else
        skip "no /usr/bin/python3: accumulated weights not compared ($opt)"
    fi
done
# The records agree too (the clean-pass losses of the micro-batches are the batch's).
a=$(jq -r 'select(.epoch == 3) | .train_loss' k1/metrics.jsonl)
b=$(jq -r 'select(.epoch == 3) | .train_loss' k4/metrics.jsonl)
awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; exit !(d * d <= 1e-12 * a * a) }'
ok $? "accumulate 4: epoch-3 train_loss $b = $a"
"$SAMX" run acc.yaml train.accumulate=4 -o k4a -q -t 2 --force &&
    "$SAMX" run acc.yaml train.accumulate=4 -o k4b -q -t 2 --force &&
    cmp -s <(strip_timing k4a/metrics.jsonl) <(strip_timing k4b/metrics.jsonl) &&
    cmp -s k4a/model.safetensors k4b/model.safetensors
ok $? "accumulate 4 is deterministic (records and weights byte-identical)"

sed 's/batch_size: 24}/batch_size: 24, accumulate: 5}/' acc.yaml >bad-acc.yaml
"$SAMX" run bad-acc.yaml -o bad -q 2>err
expect_err $? "bad-acc.yaml:5:[0-9]*: 'train.accumulate' (5) must divide train.batch_size (24)" &&
    [ ! -e bad/metrics.jsonl ]
ok $? "accumulate 5 with batch 24: one error line at file:line:column, exit 2, nothing run"
sed 's/batch_size: 24}/batch_size: 24, accumulate: 0}/' acc.yaml >bad-acc0.yaml
"$SAMX" run bad-acc0.yaml -o bad -q 2>err
expect_err $? "bad-acc0.yaml:5:[0-9]*: 'train.accumulate' (0) must divide"
ok $? "accumulate 0: config error at file:line:column"

# BatchNorm: each micro-batch is normalised with its own statistics, so accumulate changes the
# run (it is not the full-batch one); what holds is that it is deterministic and trains.
cat >bn.yaml <<'EOF'
name: bn
seed: 1
data: {name: fashion-mnist, limit_train: 320, limit_test: 100}
model: {name: cnn, channels: [4, 6]}
train: {epochs: 1, batch_size: 32, eval_batch_size: 100}
optimizer: {name: sam, rho: 0.05, base: {name: sgd, lr: 0.05}}
EOF
"$SAMX" run bn.yaml -o bn1 -q -t 2 && "$SAMX" run bn.yaml train.accumulate=4 -o bn4 -q -t 2 &&
    "$SAMX" run bn.yaml train.accumulate=4 -o bn4b -q -t 2
rc=$?
cmp -s bn4/model.safetensors bn4b/model.safetensors && ! cmp -s bn1/model.safetensors bn4/model.safetensors
ok $((rc | $?)) "BatchNorm with accumulate 4: deterministic, and micro-batch statistics give other weights than the full batch"

# Ghost BatchNorm (train.bn_group): a group of the whole batch is the plain run bit for bit;
# groups of 8 are what accumulate 4 computes (micro-batches of 8 with their own statistics and
# one running-statistics update each), up to the order of the gradient's sums; SGD with
# momentum so that no perturbation separates them.
"$SAMX" run bn.yaml optimizer='{name: sgd, lr: 0.05, momentum: 0.9}' -o gb1 -q -t 2 &&
    "$SAMX" run bn.yaml optimizer='{name: sgd, lr: 0.05, momentum: 0.9}' train.bn_group=32 \
        -o gb32 -q -t 2 &&
    cmp -s <(strip_timing gb1/metrics.jsonl) <(strip_timing gb32/metrics.jsonl) &&
    cmp -s gb1/model.safetensors gb32/model.safetensors
ok $? "bn_group = the batch: records and weights byte-identical to the run without it"
"$SAMX" run bn.yaml optimizer='{name: sgd, lr: 0.05, momentum: 0.9}' train.bn_group=8 \
    -o gb8 -q -t 2 &&
    "$SAMX" run bn.yaml optimizer='{name: sgd, lr: 0.05, momentum: 0.9}' train.accumulate=4 \
        -o ga4 -q -t 2
rc=$?
if have_py; then
    d=$(st_diff gb8/model.safetensors ga4/model.safetensors 2>/dev/null || echo nan)
    # 1e-4: ten momentum steps amplify the gradient sums' other order (2.1e-5 measured on one
    # machine, less on another); a group statistic or update that differed would be ~1e-2.
    $PY -c "import sys; sys.exit(not (float('$d') <= 1e-4))"
    ok $((rc | $?)) "bn_group 8 = accumulate 4 with batch 32: weights and running statistics within $d relative"
else
    skip "no /usr/bin/python3: ghost BatchNorm weights not compared"
fi
! cmp -s gb1/model.safetensors gb8/model.safetensors
ok $? "bn_group 8 trains other weights than the whole batch's statistics"
"$SAMX" run bn.yaml model='{name: cnn, channels: [4, 6], batchnorm: false}' train.bn_group=8 \
    -o bad -q 2>err
expect_err $? "'train.bn_group': model 'cnn' has no BatchNorm"
ok $? "bn_group without BatchNorm: config error, exit 2"

# Peak memory: the model's workspace holds one micro-batch. MLP of 3 x 512 on batches of 2048:
# 2048 x 512 x 4 bytes = 4 MB per activation buffer, about 8 of them, 3/4 of them saved with k 4.
if [ -x /usr/bin/time ]; then
    cat >mem.yaml <<'EOF'
name: mem
seed: 1
data: {name: synthetic-linear, n_train: 2048, n_test: 16, features: 784}
model: {name: mlp, hidden: [512, 512, 512], activation: relu}
train: {epochs: 1, batch_size: 2048, eval_batch_size: 128}
optimizer: {name: sgd, lr: 0.001}
EOF
    /usr/bin/time -f %M -o m1 "$SAMX" run mem.yaml -o mem1 -q -t 1 &&
        /usr/bin/time -f %M -o m4 "$SAMX" run mem.yaml train.accumulate=4 -o mem4 -q -t 1
    rc=$?
    test $rc -eq 0 && [ $(($(cat m1) - $(cat m4))) -gt 12000 ]
    ok $? "peak RSS with accumulate 4: $(cat m4) KB, without: $(cat m1) KB (more than 12 MB less)"
else
    skip "/usr/bin/time not installed: peak memory not measured"
fi

# --- best checkpoints and early stopping -------------------------------------------------------------
cat >es.yaml <<'EOF'
name: es
seed: 1
data: {name: synthetic-linear, n_train: 96, n_test: 40, features: 5}
model: {name: mlp, hidden: [8], activation: tanh}
train:
  epochs: 30
  batch_size: 24
  keep_best: test_loss
  allow_test: true
  early_stop: {metric: test_loss, patience: 2, min_delta: 0.001}
optimizer: {name: sgd, lr: 0.3, momentum: 0.9}
EOF
"$SAMX" run es.yaml -o es -q -t 2
ok $? "keep_best + early_stop run exits 0"
# The rule, recomputed from the records: best so far (improvement > min_delta), epochs since.
want=$(jq -s -r '
  reduce .[] as $r ({best: null, wait: 0, stop: null};
    if .stop != null then . elif .best == null or $r.test_loss < .best - 0.001
    then .best = $r.test_loss | .wait = 0
    else .wait += 1 | (if .wait >= 2 then .stop = $r.epoch else . end) end) | .stop' es/metrics.jsonl)
last=$(jq -s -r '.[-1].epoch' es/metrics.jsonl)
[ "$want" != null ] && [ "$last" = "$want" ] && [ "$last" -lt 30 ]
ok $? "early stop after epoch $last (the rule on the records: $want)"
jq -e '.status == "stopped"' es/summary.json >/dev/null && jq -e '.status == "stopped"' es/meta.json >/dev/null
ok $? "status 'stopped' in summary.json and meta.json"
best=$(jq -s -r 'min_by(.test_loss) | .epoch' es/metrics.jsonl)
jq -e --argjson b "$best" '.best_epoch == $b and .best.epoch == $b and .best_by == "test_loss"' es/summary.json >/dev/null &&
    [ "$(jq -s -r '.[-1].best_epoch' es/metrics.jsonl)" = "$best" ]
ok $? "summary.json and the records name the best epoch ($best, the records' minimum of test_loss)"
# best.safetensors is the model after the best epoch: byte for byte a run of that many epochs.
cat >plain.yaml <<EOF
name: plain
seed: 1
data: {name: synthetic-linear, n_train: 96, n_test: 40, features: 5}
model: {name: mlp, hidden: [8], activation: tanh}
train: {epochs: $best, batch_size: 24}
optimizer: {name: sgd, lr: 0.3, momentum: 0.9}
EOF
"$SAMX" run plain.yaml -o plain -q -t 2 && cmp -s plain/model.safetensors es/best.safetensors
ok $? "best.safetensors = model.safetensors of a run trained $best epochs, byte for byte"
cp es/metrics.jsonl es-records
"$SAMX" run es.yaml -o es -t 2 2>err
rc=$?
test $rc -eq 0 && grep -q "already finished: stopped early" err && cmp -s es-records es/metrics.jsonl
ok $? "a rerun of a stopped run does not train on"
cp -r es es-crash && rm es-crash/summary.json
"$SAMX" run es.yaml -o es-crash -q -t 2 && jq -e '.status == "stopped"' es-crash/summary.json >/dev/null &&
    cmp -s es-records es-crash/metrics.jsonl
ok $? "resuming from the checkpoint of a stopped run (no summary yet) stops without training"
# Interrupted mid-run and resumed: the same records as the uninterrupted run. The run is long
# enough (about 8 epochs after the second record) that SIGINT lands mid-run; a machine fast
# enough to finish first gets up to five tries.
cat >es-long.yaml <<'EOF'
name: esl
seed: 4
data: {name: fashion-mnist, limit_train: 20000, limit_test: 500, val_split: 0.1}
model: {name: mlp, hidden: [64]}
train:
  epochs: 30
  batch_size: 50
  keep_best: val_acc
  early_stop: {metric: val_loss, patience: 8}
optimizer: {name: sgd, lr: 0.2, momentum: 0.9}
EOF
"$SAMX" run es-long.yaml -o full -q -t 2
for _ in 1 2 3 4 5; do
    rm -rf int
    "$SAMX" run es-long.yaml -o int -q -t 2 &
    pid=$!
    for _ in $(seq 400); do
        [ "$(cat int/metrics.jsonl 2>/dev/null | wc -l)" -ge 2 ] && break
        sleep 0.02
    done
    kill -INT $pid
    wait $pid
    rc=$?
    [ $rc -eq 130 ] && break
done
"$SAMX" run es-long.yaml -o int -q -t 2
rc2=$?
test $rc -eq 130 && test $rc2 -eq 0 && cmp -s <(strip_timing full/metrics.jsonl) <(strip_timing int/metrics.jsonl) &&
    cmp -s full/best.safetensors int/best.safetensors &&
    [ "$(jq -r .status int/summary.json)" = "$(jq -r .status full/summary.json)" ]
ok $? "interrupted (rc $rc) and resumed: records, best.safetensors and status ($(jq -r .status full/summary.json), $(wc -l <full/metrics.jsonl) records) equal the uninterrupted run's"

# samx table --at best:NAME takes the recorded best (summary.json) and counts stopped runs.
"$SAMX" table es --metric test_loss --at best:test_loss --format csv >tab 2>err
v=$(tail -1 tab | cut -d, -f3)
b=$(jq -r .best.test_loss es/summary.json)
[ "$v" = "$b" ] && [ "$(tail -1 tab | cut -d, -f5)" = 1 ]
ok $? "samx table --at best:test_loss: $v (summary's best $b), n = 1 for the stopped run"
jq '.best.test_loss = 12.5' es/summary.json >s && cp s es/summary.json
"$SAMX" table es --metric test_loss --at best:test_loss --format csv >tab 2>err
[ "$(tail -1 tab | cut -d, -f3)" = 12.5 ]
ok $? "samx table reads the recorded best record (not a rescan of the records)"

"$SAMX" run es.yaml train.allow_test=false -o x -q 2>err
expect_err $? "es.yaml:8:[0-9]*: 'train.keep_best': selecting on the test set"
ok $? "keep_best on a test metric without allow_test: config error at file:line:column"
sed 's/keep_best: test_loss/keep_best: val_loss/; s/allow_test: true/allow_test: false/' es.yaml >es-notest.yaml
"$SAMX" run es-notest.yaml -o x -q 2>err
expect_err $? "es-notest.yaml:8:[0-9]*: 'train.keep_best': 'val_loss' needs a validation split"
ok $? "keep_best val_loss without a validation split: config error"
sed 's/patience: 2/patience: -1/' es.yaml >bad-p.yaml
"$SAMX" run bad-p.yaml -o x -q 2>err
expect_err $? "bad-p.yaml:10:[0-9]*: 'train.early_stop.patience' must be in \[1, 1000000\], got -1"
ok $? "negative patience: config error at file:line:column"
sed 's/min_delta: 0.001/min_delta: -1/' es.yaml >bad-d.yaml
"$SAMX" run bad-d.yaml -o x -q 2>err
expect_err $? "bad-d.yaml:10:[0-9]*: 'train.early_stop.min_delta' must be >= 0"
ok $? "negative min_delta: config error at file:line:column"
sed 's/keep_best: test_loss/keep_best: test_acc/' es.yaml >bad-acc.yaml
"$SAMX" run bad-acc.yaml -o x -q 2>err
expect_err $? "bad-acc.yaml:8:[0-9]*: 'train.keep_best': 'test_acc' needs a classification"
ok $? "keep_best test_acc on regression data: config error"
sed 's/keep_best: test_loss/keep_best: tets_loss/' es.yaml >bad-m.yaml
"$SAMX" run bad-m.yaml -o x -q 2>err
expect_err $? "bad-m.yaml:8:[0-9]*: 'train.keep_best' must be one of"
ok $? "keep_best with an unknown metric: config error"

# --- Hessian density and trace -------------------------------------------------------------------
cat >hd.yaml <<'EOF'
name: hd
seed: 1
data: {name: synthetic-linear, n_train: 96, n_test: 40, features: 5}
model: {name: mlp, hidden: [6], activation: tanh}
train: {epochs: 2, batch_size: 24}
optimizer: {name: sgd, lr: 0.1}
eval:
  hessian_density: {examples: 96, steps: 12, runs: 3, bins: 200}
  hessian_trace: {examples: 96}
EOF
"$SAMX" run hd.yaml -o hd -q -t 2
ok $? "a run with eval.hessian_density and the default hessian_trace exits 0"
f=hd/density/epoch_0002.csv
[ "$(head -1 $f)" = "eigenvalue,density" ] && [ "$(wc -l <$f)" -eq 201 ] &&
    [ "$(head -1 hd/density/epoch_0002_nodes.csv)" = "run,node,weight" ] &&
    [ "$(tail -n +2 hd/density/epoch_0002_nodes.csv | wc -l)" -eq 36 ]
ok $? "density/epoch_0002.csv (200 grid points) and its nodes (3 runs x 12) are written"
# The nodes' weights sum to 1 per run and the density integrates to 1 on its grid.
awk -F, 'FNR == 1 { next }
    FILENAME ~ /nodes/ { w[$1] += $3; v = $2 + 0; if (!seen++) lo = hi = v
                         if (v < lo) lo = v; if (v > hi) hi = v; next }
    { if (FNR == 2) g0 = $1; if (FNR == 3) dx = $1 - g0; s += $2; gl = $1 }
    END { for (r = 0; r < 3; r++) if ((w[r] - 1)^2 > 1e-12) exit 1
          exit !((s * dx - 1)^2 < 1e-12 && g0 < lo && gl > hi) }' hd/density/epoch_0002_nodes.csv "$f"
ok $? "the weights of each run sum to 1, the density integrates to 1, its grid covers every node"
jq -e 'select(.epoch == 2) | .hessian_density_steps == 12 and (.hessian_density_lambda_max > .hessian_density_lambda_min)
       and (.hessian_trace_rel_err <= 0.05 or .hessian_trace_probes == 980) and .hessian_trace_pilot_probes == 20' \
    hd/metrics.jsonl >/dev/null
ok $? "records: hessian_density_* and the trace's achieved rel_err ($(jq -r 'select(.epoch == 2) | .hessian_trace_rel_err' hd/metrics.jsonl), $(jq -r 'select(.epoch == 2) | .hessian_trace_probes' hd/metrics.jsonl) probes)"
if command -v gnuplot >/dev/null; then
    gnuplot -e "set datafile separator ','; set terminal dumb; plot '$f' skip 1 using 1:2 with lines" >plot.txt 2>&1
    ok $? "gnuplot draws the density with the command in samx(1)"
else
    skip "gnuplot not installed"
fi
sed 's/runs: 3/runs: 0/' hd.yaml >bad-hd.yaml
"$SAMX" run bad-hd.yaml -o x -q 2>err
expect_err $? "bad-hd.yaml:8:[0-9]*: 'eval.hessian_density.runs' must be in \[1, 1000\]"
ok $? "a density with 0 runs: config error at file:line:column"
sed 's/steps: 12/steps: 100/' hd.yaml >bad-hd2.yaml
"$SAMX" run bad-hd2.yaml -o x -q 2>err
expect_err $? "bad-hd2.yaml:8:[0-9]*: 'eval.hessian_density.steps' must be in \[1, 1000\] and at most the number of parameters"
ok $? "more Lanczos steps than parameters: config error"
sed 's/hessian_trace: {examples: 96}/hessian_trace: {examples: 96, tol: 0.001}/' hd.yaml >bad-tr.yaml
"$SAMX" run bad-tr.yaml -o x -q 2>err
expect_err $? "bad-tr.yaml:9:[0-9]*: 'eval.hessian_trace.tol' must be 0 with rel_err > 0"
ok $? "PyHessian's tol with a rel_err target: config error"
sed 's/hessian_trace: {examples: 96}/hessian_trace: {examples: 96, rel_err: 1.5}/' hd.yaml >bad-tr2.yaml
"$SAMX" run bad-tr2.yaml -o x -q 2>err
expect_err $? "bad-tr2.yaml:9:[0-9]*: 'eval.hessian_trace.rel_err' must be in \[0, 1)"
ok $? "rel_err out of range: config error"

tap_done
