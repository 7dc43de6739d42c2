#!/usr/bin/env bash
# runsays.sh SAMX SRCDIR: what samx tells the user, as TAP. Off a terminal (as here) a run says
# one line per epoch and one final line with its result and run directory; interrupted,
# resumed, skipped and diverged runs say so; degenerate settings give one warning line naming
# the key; -q leaves only errors, on every command; the man page and `samx list keys` cover the
# keys and commands the code has.
set -u
SAMX=$(realpath "$1")
SRC=$2
T=$(mktemp -d /tmp/samx-says.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/tap.sh"

cat >"$T/small.yaml" <<EOF
name: small
seed: 1
data: {name: fashion-mnist, limit_train: 2000, limit_test: 500, val_split: 0.1}
model: {name: mlp, hidden: [32]}
train: {epochs: 2, batch_size: 100}
eval: {hessian_trace: {probes: 2, rel_err: 0, examples: 200}}
optimizer:
  name: sam
  rho: 0.05
  base: {name: sgd, lr: {schedule: cosine, start: 0.1}, momentum: 0.9, weight_decay: 5e-4}
EOF

# --- a run's lines, off a terminal ----------------------------------------------------------
"$SAMX" run "$T/small.yaml" -o "$T/a" -t 2 >"$T/out" 2>"$T/err"
ok $? "run exits 0"
test ! -s "$T/out"
ok $? "nothing on stdout"
[ "$(grep -c '^samx: epoch [0-2]/2 ' "$T/err")" -eq 3 ]
ok $? "one stderr line per epoch, 0 to 2, off a terminal"
grep '^samx: epoch 2/2 ' "$T/err" |
    grep -qE 'train loss [0-9.]+ acc [0-9.]+  val loss [0-9.]+ acc [0-9.]+  test loss [0-9.]+ acc [0-9.]+  hessian_trace [0-9.e+]+  [0-9.]+ s$'
ok $? "an epoch line has train, val and test loss and accuracy, the Hessian trace and seconds"
acc=$(tail -1 "$T/a/metrics.jsonl" | sed -E 's/.*"test_acc":([0-9.]+).*/\1/')
grep -q "^samx: epoch 2/2 .*test loss [0-9.]* acc $(printf %.4f "$acc") " "$T/err"
ok $? "the epoch line's test accuracy is the record's ($acc)"
tail -1 "$T/err" | grep -qE "^samx: completed 2 epochs in [0-9.]+ s: test_acc [0-9.]+ test_loss [0-9.]+ val_acc [0-9.]+ val_loss [0-9.]+; best val_acc [0-9.]+ at epoch [0-9]; run directory '$T/a'$"
ok $? "the last line gives the result, the best record and the run directory"
grep -q "^samx: warning" "$T/err"
test $? -ne 0
ok $? "a sound config gives no warning"
grep -qE '"best_on":\s*"validation"' "$T/a/summary.json"
ok $? "summary.json: best_on validation with a validation split"

"$SAMX" run "$T/small.yaml" -o "$T/a" -t 2 2>"$T/err"
ok $? "a completed run exits 0 when run again"
[ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "^samx: skipped: '$T/a' is already complete" "$T/err"
ok $? "a skipped run says so in one line"

"$SAMX" run "$T/small.yaml" -o "$T/q" -t 2 -q >"$T/out" 2>"$T/err"
ok $? "run -q exits 0"
test ! -s "$T/err" && test ! -s "$T/out" && test -s "$T/q/summary.json"
ok $? "run -q prints nothing"

# --- interrupted, resumed, diverged -----------------------------------------------------------
cat >"$T/long.yaml" <<EOF
name: long
data: {name: fashion-mnist, limit_train: 6000, limit_test: 500}
model: {name: mlp, hidden: [64]}
train: {epochs: 30, batch_size: 50}
optimizer: {name: sam, base: {name: sgd, lr: 0.05, momentum: 0.9}}
EOF
"$SAMX" run "$T/long.yaml" -o "$T/int" -t 2 2>"$T/int.err" &
pid=$!
for _ in $(seq 200); do
    [ "$(cat "$T/int/metrics.jsonl" 2>/dev/null | wc -l)" -ge 2 ] && break
    sleep 0.05
done
kill -INT $pid
wait $pid
rc=$?
test $rc -eq 130 && tail -1 "$T/int.err" |
    grep -qE "^samx: interrupted (in epoch [0-9]+ at step [0-9]+ of 120|after epoch [0-9]+ of 30): checkpoint saved; run the same command again to resume; run directory '$T/int'$"
ok $? "an interrupted run says where it stopped and how to resume (rc $rc)"
"$SAMX" run "$T/long.yaml" -o "$T/int" -t 2 2>"$T/err" &
pid=$!
for _ in $(seq 200); do
    grep -q "^samx: epoch" "$T/err" 2>/dev/null && break
    sleep 0.05
done
kill -INT $pid
wait $pid
grep -qE "^samx: resuming '$T/int' (in epoch [0-9]+ at step [0-9]+ of 120|after epoch [0-9]+ of 30) \(2 threads\)$" "$T/err"
ok $? "a resumed run says where it resumes"

"$SAMX" run "$T/small.yaml" optimizer.base.lr=1.0e6 optimizer.base.momentum=0 -o "$T/div" -t 2 \
    2>"$T/err"
ok $? "a diverging run exits 0"
tail -1 "$T/err" | grep -qE "^samx: diverged: a non-finite loss or gradient at step [0-9]+ \(epoch [0-9]+ of 2\); status 'diverged' \(a result, exit 0\); run directory '$T/div'$"
ok $? "a diverged run says so in its last line"
"$SAMX" run "$T/small.yaml" optimizer.base.lr=1.0e6 optimizer.base.momentum=0 -o "$T/div" -t 2 2>"$T/err"
[ "$(wc -l <"$T/err")" -eq 1 ] &&
    grep -qx "samx: skipped: '$T/div' is already finished: diverged (use --force to run it again)" "$T/err"
ok $? "a diverged run run again is skipped, saying it diverged ($(cat "$T/err"))"

# --- warnings for degenerate settings -----------------------------------------------------------
cat >"$T/warm.yaml" <<EOF
name: warm
data: {name: fashion-mnist, limit_train: 2000, limit_test: 500}
model: {name: mlp, hidden: [32]}
train: {epochs: 1, batch_size: 100}
optimizer:
  name: sam
  rho: 0.05
  base: {name: sgd, lr: {schedule: cosine, start: 0.05, end: 0, warmup: 1}, momentum: 0.9}
EOF
"$SAMX" run "$T/warm.yaml" -o "$T/warm" -t 2 2>"$T/err"
ok $? "cosine lr with warmup 1 over 1 epoch exits 0"
grep -qx "samx: warning: 'optimizer.base.lr': warmup 1 is at least the whole run (train.epochs=1), so the run never reaches the scheduled values" "$T/err"
ok $? "a warmup as long as the run is a warning naming the key"
grep -q "is 0 at every step" "$T/err"
test $? -ne 0
ok $? "that warmup ramps lr up: no zero-lr warning"
python3 - "$T/warm/metrics.jsonl" <<'EOF'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])][-1]
# 20 steps ramping 0 -> 0.05: the last step's lr is 0.05 * 19/20 (it was 0 for every step
# before the warmup's target became the cosine's start)
assert abs(r["lr"] - 0.05 * 19 / 20) < 1e-12, r["lr"]
assert r["test_acc"] > 0.5, r["test_acc"]
EOF
ok $? "that run trains: last lr 0.0475, test accuracy above 0.5"

"$SAMX" check "$T/warm.yaml" 'optimizer.base.lr={schedule: linear, start: 0, end: 0.1, epochs: 10, per: epoch}' >/dev/null 2>"$T/err"
ok $? "check of an lr that is 0 all run exits 0"
grep -qx "samx: warning: 'optimizer.base.lr' is 0 at every step of the run (20 steps over train.epochs=1)" "$T/err"
ok $? "a scheduled hyperparameter 0 for the whole run is a warning naming the key"

"$SAMX" check "$T/warm.yaml" optimizer.base.lr=0.1 train.batch_size=5000 >/dev/null 2>"$T/err"
grep -qx "samx: warning: 'train.batch_size' 5000 is larger than the training set (2000 examples): every step is one full batch of the whole set" "$T/err"
ok $? "a batch larger than the data set is a warning naming the key"

grep -qx "samx: warning: no validation split ('data.val_split' is 0): the best record in summary.json is selected on the test set (\"best_on\": \"test\")" "$T/err"
ok $? "best selected on the test set is a warning"
grep -qE '"best_on":\s*"test"' "$T/warm/summary.json" && grep -qE '"best_by":\s*"test_acc"' "$T/warm/summary.json"
ok $? "summary.json: best_on test without a validation split"
[ "$(grep -c '^samx: warning' "$T/err")" -eq 2 ]
ok $? "one line per warning"
"$SAMX" check "$T/warm.yaml" train.batch_size=5000 -q >/dev/null 2>"$T/err"
test ! -s "$T/err"
ok $? "check -q silences warnings"
# A sweep says its runs' warnings when it plans them, each once, with how many runs gave it:
# the warmup and the test-set selection (all runs), the batch and, with one step, lr 0 (two)
"$SAMX" sweep "$T/warm.yaml" train.batch_size=100,5000 seed=0,1 --dry-run -o "$T/wsw" >/dev/null 2>"$T/err"
test $? -eq 0 && [ "$(grep -c '^samx: warning' "$T/err")" -eq 4 ] &&
    grep -q "^samx: warning: 'optimizer.base.lr' is 0 at every step of the run (1 step over train.epochs=1) (2 of 4 runs, first batch_size=5000,seed=0-" "$T/err" &&
    grep -qx "samx: warning: 'optimizer.base.lr': warmup 1 is at least the whole run (train.epochs=1), so the run never reaches the scheduled values (all 4 of 4 runs, first batch_size=100,seed=0-[0-9a-f]*)" "$T/err" &&
    grep -qx "samx: warning: 'train.batch_size' 5000 is larger than the training set (2000 examples): every step is one full batch of the whole set (2 of 4 runs, first batch_size=5000,seed=0-[0-9a-f]*)" "$T/err"
ok $? "sweep: each run's warning once, with its count of runs ($(grep -c '^samx: warning' "$T/err") warnings: $(head -c 300 "$T/err"))"
"$SAMX" sweep "$T/warm.yaml" train.batch_size=100,5000 --dry-run -q -o "$T/wsw" >/dev/null 2>"$T/err"
test $? -eq 0 && test ! -s "$T/err"
ok $? "sweep -q: no warnings"
"$SAMX" table "$T/warm" --at best:test_acc >"$T/out" 2>"$T/err"
test $? -eq 0 && test -s "$T/out" && [ "$(wc -l <"$T/err")" -eq 1 ] &&
    grep -qx "samx: warning: --at best:test_acc selects each run's best record on the test set, an optimistic estimate (select on a validation split: data.val_split and --at best:val_acc)" "$T/err"
ok $? "table --at best:test_acc says that best is selected on the test set"
"$SAMX" table "$T/a" --at best:val_acc >"$T/out" 2>"$T/err"
test $? -eq 0 && test -s "$T/out" && test ! -s "$T/err"
ok $? "table --at best:val_acc gives no warning"

# --- the run directory's files for other readers --------------------------------------------------
python3 - "$T/a/config.yaml" <<'EOF'
import sys, yaml  # PyYAML reads YAML 1.1
c = yaml.safe_load(open(sys.argv[1]))
wd = c["optimizer"]["base"]["weight_decay"]
assert isinstance(wd, float) and wd == 5e-4, repr(wd)  # written 5e-4 in the config
def strings(x, p=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from strings(v, p + "." + k)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from strings(v, "%s[%d]" % (p, i))
    elif isinstance(x, str):
        yield p, x
for p, v in strings(c):
    try:
        float(v)
    except ValueError:
        continue
    sys.exit("%s is a string to PyYAML: %r" % (p, v))
EOF
ok $? "config.yaml: every number is a number to PyYAML (YAML 1.1), 5e-4 among them"
python3 - "$T/a" "$(pwd)" <<'EOF'
import hashlib, json, sys
d, cwd = sys.argv[1], sys.argv[2]
m = json.load(open(d + "/meta.json"))
assert m["config_sha256"] == hashlib.sha256(open(d + "/config.yaml", "rb").read()).hexdigest()
assert m["run_id"].endswith(m["config_sha256"][:8]), m["run_id"]
assert m["working_directory"] == cwd, m["working_directory"]
assert len(m["cpu_flags"].split()) > 10 and "sse2" in m["cpu_flags"].split(), m["cpu_flags"]
EOF
ok $? "meta.json: config hash (of config.yaml), working directory, CPU flags"

# --- -q and -t on the other commands ----------------------------------------------------------------
"$SAMX" landscape "$T/a" eval.landscape.points=5 -t 1 -q 2>"$T/err"
ok $? "landscape takes -t and -q"
test ! -s "$T/err" && [ "$(wc -l <"$T/a/landscape/final.csv")" -eq 6 ]
ok $? "landscape -q is silent and writes its slice"
"$SAMX" landscape "$T/a" eval.landscape.points=5 -t 1 2>"$T/err"
grep -qx "samx: wrote '$T/a/landscape/final.csv'" "$T/err"
ok $? "landscape says what it wrote"
"$SAMX" landscape "$T/a" -t 0 2>"$T/err"
[ $? -eq 2 ] && one_error "$T/err" "-t needs a thread count"
ok $? "landscape -t 0 is a usage error"

"$SAMX" sweep "$T/small.yaml" seed=1,2 train.epochs=1 -o "$T/sw" -t 2 -q >"$T/out" 2>"$T/err"
ok $? "sweep takes -t and -q"
test ! -s "$T/err" && [ "$(ls -d "$T"/sw/small/seed=*/ | wc -l)" -eq 2 ]
ok $? "sweep -q prints nothing and runs every run"
"$SAMX" sweep "$T/small.yaml" seed=3 train.epochs=1 -o "$T/sw" -t 2 >"$T/out" 2>"$T/err"
grep -q "^samx: epoch" "$T/err"
test $? -ne 0
ok $? "the runs of a sweep stay quiet (they run with -q)"
"$SAMX" table "$T/sw" -q >"$T/out" 2>"$T/err"
test -s "$T/out" && test ! -s "$T/err"
ok $? "table takes -q"
"$SAMX" plot "$T/sw" --y test_acc -o "$T/p.txt" -q >"$T/out" 2>"$T/err"
ok $? "plot takes -q"

# Their warnings are not errors either: a group mixing BLAS cores (table, plot), a group left
# out of a figure, and gnuplot's own (one point per curve: an empty y range).
mkdir -p "$T/mx/small"
cp -r "$T"/sw/small/seed=1,* "$T/mx/small/"
OPENBLAS_CORETYPE=Prescott "$SAMX" run "$T/small.yaml" seed=4 train.epochs=1 -t 2 -q -o "$T/mx/small/core"
"$SAMX" run "$T/small.yaml" seed=4 train.epochs=1 optimizer.rho=0.1 'eval={}' -t 2 -q -o "$T/mx/small/rho"
"$SAMX" table "$T/mx" --group optimizer.rho >/dev/null 2>"$T/err.loud" &&
    "$SAMX" table "$T/mx" --group optimizer.rho -q >"$T/out" 2>"$T/err"
test $? -eq 0 && grep -q "mixes BLAS cores" "$T/err.loud" && test -s "$T/out" && test ! -s "$T/err"
ok $? "table -q: no warning for a group mixing BLAS cores ($(head -c 200 "$T/err" | tr '\n' ' '))"
bad=0
for a in "$T/mx --group optimizer.rho" "$T/mx/small/core"; do
    "$SAMX" plot $a --y hessian_trace -o "$T/mx.png" 2>>"$T/err.loud" &&
        "$SAMX" plot $a --y hessian_trace -o "$T/mx.png" -q >"$T/out" 2>"$T/err" &&
        test ! -s "$T/out" && test ! -s "$T/err" || { bad=1; head -c 300 "$T/err"; }
done
grep -q "mixes BLAS cores" "$T/err.loud" && grep -q "left out of the figure" "$T/err.loud" &&
    grep -q "^Warning: empty y range" "$T/err.loud" || bad=1
ok $bad "plot -q: no warning for mixed cores, a group left out or gnuplot's empty y range"

# --- the keys and commands, as the code has them ----------------------------------------------
"$SAMX" list keys >"$T/keys"
grep -qx '    train.epochs \[10\]' "$T/keys" && grep -qx '    data.val_split \[0\]' "$T/keys" &&
    grep -qx '    eval.hessian_trace.probes \[1000\]' "$T/keys"
ok $? "samx list keys lists train.*, data.* and eval.* keys with defaults"
cat >"$T/keys.yaml" <<EOF
data: {name: synthetic-linear, n_train: 200, n_test: 100}
model: {name: mlp, hidden: [8]}
train: {epochs: 1}
optimizer: {name: sgd}
EOF
bad=0
while read -r key def; do
    def=${def#[}
    def=${def%]}
    [ "$def" = none ] && continue
    "$SAMX" check "$T/keys.yaml" "$key=$def" -q >"$T/resolved" 2>"$T/err" || { bad=1; cat "$T/err"; }
done < <(grep -E '^    [a-z_]+\.[a-z_.]+ \[[^] ]*\]$' "$T/keys")
ok $bad "every listed key and default is accepted by samx check"

"$SAMX" check "$T/keys.yaml" optimizer.lr=1e-1 optimizer.weight_decay=5E-4 optimizer.momentum=.9 \
    optimizer.dampening=0.0e0 -q >"$T/resolved" 2>"$T/err" &&
    python3 - "$T/resolved" <<'EOF'
import sys, yaml
o = yaml.safe_load(open(sys.argv[1]))["optimizer"]
want = {"lr": 0.1, "weight_decay": 5e-4, "momentum": 0.9, "dampening": 0.0}
got = {k: o[k] for k in want}
# one spelling per value (0.0e0 and 0 are one config): a whole value reads as an int
assert got == want and all(type(v) in (int, float) for v in got.values()), got
EOF
ok $? "samx check writes 1e-1, 5E-4, .9 and 0.0e0 as numbers PyYAML reads as such"

MAN="$SRC/cmd/samx.1"
test -s "$MAN" && LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z "$MAN" 2>"$T/err" && test ! -s "$T/err"
ok $? "the man page renders without groff warnings"
LC_ALL=C.UTF-8 MANWIDTH=200 groff -man -Tutf8 -rLL=200n "$MAN" 2>/dev/null | col -b >"$T/man.txt"
missing=""
for c in $("$SAMX" help | awk '/^  [a-z]/ {print $1}'); do
    grep -q "samx $c" "$T/man.txt" || missing="$missing $c"
done
for k in $(grep -oE '^    [a-z_]+\.[a-z_.]+' "$T/keys"); do
    grep -qF "${k##*.}" "$T/man.txt" || missing="$missing $k"
done
test -z "$missing"
ok $? "the man page has every command and every listed key${missing:+ (missing:$missing)}"
grep -q 'shared/docs' "$SRC/README.md"
test $? -ne 0
ok $? "README.md links nothing outside the repository"

tap_done
