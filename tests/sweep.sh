#!/usr/bin/env bash
# sweep.sh SAMX: samx sweep, table and plot end to end, as TAP.
# A -j 2 sweep runs each run once and a second invocation runs nothing; the script for GNU
# parallel produces the same run directories; an interrupted sweep resumes to an uninterrupted
# one's records; the table's numbers equal those computed here from summary.json with jq;
# pooling refusal, strict configs, failed runs and plot output. Tiny Fashion-MNIST configs.
set -u
SAMX=$(realpath "$1")
T=$(mktemp -d /tmp/samx-sweep.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/tap.sh"
# every file of every run under $1 with its content hash and mtime: "runs nothing" means equal
snapshot() {
    find "$1" -path '*=*' -type f -exec stat -c '%n %y' {} + | sort
    find "$1" -path '*=*' -type f -exec md5sum {} + | sort
}

cat >"$T/tiny.yaml" <<EOF
name: tiny
data: {name: fashion-mnist, limit_train: 500, limit_test: 200}
model: {name: mlp, hidden: [16]}
train: {epochs: 2, batch_size: 50}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
EOF
cd "$T" || exit 1

# --- a local sweep, -j 2 ------------------------------------------------------------------------
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 -j 2 -o "$T/a" 2>"$T/err"
ok $? "sweep -j 2 exits 0 ($(head -c 200 "$T/err" | tr "\n" " "))"
test "$(ls -d "$T"/a/tiny/*=*/ | wc -l)" -eq 4
ok $? "four run directories"
bad=0
for d in "$T"/a/tiny/*=*/; do
    [ "$(jq -sc 'map(.epoch)' "$d/metrics.jsonl")" = "[0,1,2]" ] || bad=1
    [ "$(jq -r .status "$d/summary.json")" = completed ] || bad=1
    [ "$(jq -r .omp_threads "$d/meta.json")" = 1 ] || bad=1
done
ok $bad "each run ran once (epochs 0,1,2 once each), completed, with cores/jobs = 1 thread"
test "$(ls "$T"/a/tiny/sweeps/*/manifest.jsonl | wc -l)" -eq 1 &&
    test "$(jq -r .run_id "$T"/a/tiny/sweeps/*/manifest.jsonl | sort)" = "$(cd "$T/a/tiny" && ls -d *=* | sort)"
ok $? "one manifest (sweeps/HASH/manifest.jsonl), one line per run"
grep -c '^samx: start [1-4]/4 ' "$T/err" | grep -qx 4 &&
    test "$(grep -c "^samx: done [1-4]/4 .* completed test_acc 0\.[0-9]\{4\} (" "$T/err")" -eq 4 &&
    grep -q "^samx: sweep 'tiny': 4 runs: 4 completed, 0 diverged, 0 interrupted, 0 failed" "$T/err"
ok $? "stderr (not a terminal): a line per run started and finished with its test_acc, and a count"
id=$("$SAMX" run tiny.yaml optimizer.lr=0.05 seed=1 --dry-run | sed -E "s|.*/([^/]*)'$|\1|")
test -d "$T/a/tiny/$id" && jq -e --arg id "$id" \
    'select(.run_id == $id) | .overrides == ["optimizer.lr=0.05", "seed=1"]' \
    "$T"/a/tiny/sweeps/*/manifest.jsonl >/dev/null
ok $? "run ids are samx run's ($id)"
jq -r .command "$T"/a/tiny/sweeps/*/manifest.jsonl | grep -q "^$SAMX run $T/tiny.yaml optimizer.lr=0.05 seed=1 -o $T/a/tiny/"
ok $? "manifest commands are absolute samx run command lines"

snapshot "$T/a" >"$T/snap1"
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 -j 2 -o "$T/a" -q 2>"$T/err"
ok $? "a second invocation exits 0"
test ! -s "$T/err"
ok $? "-q: nothing on stderr when nothing goes wrong"
snapshot "$T/a" >"$T/snap2"
cmp -s "$T/snap1" "$T/snap2"
ok $? "a second invocation runs nothing (every run file's content and mtime unchanged)"

"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 --dry-run -o "$T/dry" >"$T/out"
test "$(grep -c "^$SAMX run " "$T/out")" -eq 4 && test ! -e "$T/dry"
ok $? "--dry-run lists the 4 commands and writes nothing"

# --- the same sweep through GNU parallel ----------------------------------------------------------
if command -v parallel >/dev/null; then
    "$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 -j 2 -o "$T/p" --emit parallel >"$T/par.sh"
    grep -q -- "--joblog .*--resume-failed -j 2 :::: $T/p/tiny/sweeps/[0-9a-f]*/commands.txt" "$T/par.sh"
    ok $? "--emit parallel prints a GNU parallel invocation with a joblog"
    sh "$T/par.sh" >/dev/null 2>&1
    ok $? "the parallel script exits 0"
    test "$(cd "$T/a/tiny" && ls -d *=*/)" = "$(cd "$T/p/tiny" && ls -d *=*/)"
    ok $? "GNU parallel produces the same run directories"
    bad=0
    for d in "$T"/a/tiny/*=*/; do
        cmp -s <(strip_timing "$d/metrics.jsonl") <(strip_timing "$T/p/tiny/$(basename "$d")/metrics.jsonl") || bad=1
    done
    ok $bad "... with the same metrics.jsonl apart from timing"
    snapshot "$T/p" >"$T/snap1"
    sh "$T/par.sh" >/dev/null 2>&1 && snapshot "$T/p" | cmp -s - "$T/snap1"
    ok $? "rerunning the parallel script runs nothing"
else
    for i in 1 2 3 4 5; do skip "GNU parallel not installed"; done
fi
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 -o "$T/a" --emit slurm >"$T/slurm.sh"
grep -q '^#SBATCH --array=0-3$' "$T/slurm.sh" && SLURM_ARRAY_TASK_ID=3 bash "$T/slurm.sh" 2>/dev/null
ok $? "--emit slurm: an array of 4 tasks; task 3 runs its (completed) run's command"
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 -o "$T/a" --emit sh >"$T/seq.sh"
sh "$T/seq.sh" 2>/dev/null && snapshot "$T/a" | cmp -s - "$T/snap2"
ok $? "--emit sh: a script that reruns nothing of a completed sweep"

# --- table ------------------------------------------------------------------------------------------
"$SAMX" table "$T/a" --group optimizer.lr --format json >"$T/table.json" 2>"$T/err"
ok $? "table --format json exits 0"
bad=0
for lr in 0.05 0.1; do
    # independently: mean and sample std (n-1) of final.test_acc over the runs' summary.json
    want=$(jq -s 'map(.final.test_acc) | (add / length) as $m
                  | {mean: $m, std: ((map((. - $m) * (. - $m)) | add) / (length - 1) | sqrt), n: length}' \
           "$T"/a/tiny/lr=$lr,seed=*/summary.json)
    got=$(jq --arg lr $lr '.[] | select(.group["optimizer.lr"] == $lr) | {mean, std, n}' "$T/table.json")
    jq -en --argjson w "$want" --argjson g "$got" \
        'def abs: if . < 0 then -. else . end;
         $g.n == $w.n and (($g.mean - $w.mean) | abs) < 1e-12 and (($g.std - $w.std) | abs) < 1e-12' >/dev/null || bad=1
    md=$(printf '| %s | %.4f ± %.4f | 2 |' $lr "$(jq .mean <<<"$want")" "$(jq .std <<<"$want")")
    "$SAMX" table "$T/a" --group optimizer.lr | grep -qF "$md" || { bad=1; echo "# no row '$md'"; }
done
ok $bad "table: mean, sample std and n equal those computed from summary.json (JSON and Markdown)"
want=$(for d in "$T"/a/tiny/lr=0.1,seed=*/; do
    jq -s 'min_by(.test_loss) | .test_acc' "$d/metrics.jsonl"
done | jq -s 'add / length')
got=$("$SAMX" table "$T/a" --group optimizer.lr --at best:test_loss --format json |
    jq '.[] | select(.group["optimizer.lr"] == "0.1") | .mean')
jq -en "($got - $want) * ($got - $want) < 1e-24" >/dev/null
ok $? "table --at best:test_loss takes the metric at the epoch of the lowest test loss"
"$SAMX" table "$T/a" --group optimizer.lr --format latex | grep -q '^\\toprule$' &&
    "$SAMX" table "$T/a" --group optimizer.lr --format csv | head -1 | grep -q '^optimizer.lr,metric,at,mean,std,n,'
ok $? "LaTeX (booktabs) and CSV formats"
"$SAMX" table "$T/a" >/dev/null 2>"$T/err"
test $? -eq 2 &&
    one_error "$T/err" "runs differ in 'optimizer.lr', which is neither grouped nor seed: 0.05 in .*, 0.1 in"
ok $? "pooling refusal names the key and two values, exit 2"
"$SAMX" table "$T/a" --group optimizer.lr,seed --format json |
    jq -e 'length == 4 and all(.[]; .n == 1 and .std == null)' >/dev/null
ok $? "one run per group: std is null"

# --- plot -------------------------------------------------------------------------------------------
if command -v gnuplot >/dev/null; then
    "$SAMX" plot "$T/a" --y test_acc --group optimizer.lr -o "$T/fig/acc.png" 2>"$T/err"
    ok $? "plot exits 0 ($(head -c 200 "$T/err" | tr "\n" " "))"
    test -s "$T/fig/acc.png" && head -c 8 "$T/fig/acc.png" | grep -q PNG &&
        test -s "$T/fig/acc.png.gp" && test -s "$T/fig/acc.png.dat"
    ok $? "plot writes a non-empty PNG, acc.png.gp and acc.png.dat"
else
    skip "gnuplot not installed"
    skip "gnuplot not installed"
fi
m=$(jq '.[] | select(.group["optimizer.lr"] == "0.1") | .mean' "$T/table.json")
# without gnuplot the .dat is written all the same
test -e "$T/fig/acc.png.dat" || "$SAMX" plot "$T/a" --y test_acc --group optimizer.lr -o "$T/fig/acc.png" 2>/dev/null
awk -v m="$m" '/^# block 1:/ { b = 1 }
               b && $1 == 2 { d = $2 - m; f = 1; exit !(d * d < 1e-16) }
               END { if (!f) exit 1 }' "$T/fig/acc.png.dat"
ok $? "the plotted mean at the last epoch is the table's"
PATH=/nonexistent "$SAMX" plot "$T/a" --group optimizer.lr --y train_loss -o "$T/nognu/loss.svg" 2>"$T/err"
test $? -eq 0 && test -s "$T/nognu/loss.svg.dat" && test -s "$T/nognu/loss.svg.gp" && test ! -e "$T/nognu/loss.svg" &&
    [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "gnuplot is not installed" "$T/err"
ok $? "without gnuplot: one warning line, .dat and .gp written, exit 0"

# --- missing, failed -------------------------------------------------------------------------------
cp -r "$T/a" "$T/m"
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..2 -o "$T/m" --emit sh >/dev/null
"$SAMX" table "$T/m" --group optimizer.lr --format json | jq -e 'all(.[]; .n == 2 and .missing == 1)' >/dev/null
ok $? "table counts runs planned in the manifest but never run as missing"
bad_id=$("$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 -o "$T/f" --dry-run | head -1 | sed 's|.*/||')
mkdir -p "$T/f/tiny" && touch "$T/f/tiny/$bad_id" # a file where the run directory belongs
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 -o "$T/f" 2>"$T/err"
rc=$?
test $rc -eq 1 && grep -q "^samx: error: done 1/2: run '$bad_id' failed (exit 1): .* (log $T/f/tiny/sweeps/[0-9a-f]*/logs/$bad_id.log)$" "$T/err" &&
    grep -q "^samx: done 2/2 .* completed" "$T/err" && grep -q ": 1 completed, 0 diverged, 0 interrupted, 1 failed" "$T/err"
ok $? "a failed run does not stop the others; exit 1, a one-line reason with its log (rc $rc)"

# --- strict configs --------------------------------------------------------------------------------
cat >"$T/sam.yaml" <<EOF
name: tinysam
data: {name: fashion-mnist, limit_train: 500, limit_test: 200}
model: {name: mlp, hidden: [16]}
train: {epochs: 1}
optimizer: {name: sam, rho: 0.05, base: {name: sgd, lr: 0.1}}
EOF
"$SAMX" sweep sam.yaml optimizer.name=sam,sgd -o "$T/s" 2>"$T/err"
test $? -eq 2 && test ! -e "$T/s" &&
    one_error "$T/err" "sweep run 2 of 2 (optimizer.name=sgd): .*sam.yaml:5:24: unknown key 'optimizer.rho'"
ok $? "a key one run's method does not take: config error naming the run and key, nothing run"
cat >"$T/methods.yaml" <<EOF
config: tiny.yaml
parameters:
  optimizer: [{name: sgd, lr: 0.1}, {name: sam, rho: 0.05, base: {name: sgd, lr: 0.1}}]
  seed: 0..1
EOF
"$SAMX" sweep methods.yaml --dry-run >"$T/out" && [ "$(wc -l <"$T/out")" -eq 4 ] &&
    grep -q "'optimizer={name: sam, rho: 0.05, base: {name: sgd, lr: 0.1}}' seed=1 " "$T/out"
ok $? "a sweep file sweeping the optimizer subtree (the idiom for method-specific keys)"
"$SAMX" sweep tiny.yaml 'model.hidden=[8,8],[16]' --dry-run | grep -c "model.hidden=\[8,8\]' -o" | grep -q '^1$'
ok $? "commas inside brackets do not split"
"$SAMX" sweep tiny.yaml seed=0,0 2>"$T/err"; test $? -eq 2 && one_error "$T/err" "lists '0' twice"
ok $? "a value listed twice is an error"
"$SAMX" sweep tiny.yaml seed=0..3,2 2>"$T/err"; test $? -eq 2 && one_error "$T/err" "lists '2' twice"
ok $? "a value in a range and listed again is an error"
# The duplicate checks of values and run ids are linear: at the cap of 100000 runs, planning
# them took over 90 CPU s when each was compared with every other.
cat >"$T/syn.yaml" <<EOF
name: syn
data: {name: synthetic-linear, n_train: 100, n_test: 100}
model: {name: linear}
optimizer: {name: sgd, lr: 0.1}
EOF
TIMEFORMAT='%U %S'
{ time timeout 600 "$SAMX" sweep syn.yaml seed=1..100000 --dry-run >"$T/out" 2>"$T/err"; rc=$?; } 2>"$T/cpu"
cpu=$(awk '{printf "%d", $1 + $2}' "$T/cpu")
test $rc -eq 0 && [ "$(grep -c ' run .*/syn.yaml seed=' "$T/out")" -eq 100000 ] && [ "$cpu" -lt 45 ]
ok $? "a 100000-run sweep is planned in linear time ($cpu CPU s, exit $rc: $(head -c 200 "$T/err"))"
"$SAMX" sweep tiny.yaml -j 0 2>"$T/err"; test $? -eq 2 && one_error "$T/err" "-j needs"
ok $? "-j 0 is a usage error"
"$SAMX" table "$T/a" --group optimizer.lr --metric test_acx 2>"$T/err"
test $? -eq 2 && one_error "$T/err" "'test_acx' is not a key"
ok $? "table: an unknown metric is an error"
"$SAMX" plot "$T/a" --y test_acc -o "$T/x.gif" 2>"$T/err"
test $? -eq 2 && one_error "$T/err" ".png, .svg, .pdf or .txt"
ok $? "plot: an unknown figure type is an error"

# --- an interrupted sweep resumes ----------------------------------------------------------------
cat >"$T/long.yaml" <<EOF
name: long
data: {name: fashion-mnist, limit_train: 2000, limit_test: 200}
model: {name: mlp, hidden: [32]}
train: {epochs: 15, batch_size: 50}
optimizer: {name: sgd, lr: 0.05}
EOF
# Long enough (15 epochs) that the signal below lands while both runs are still training.
"$SAMX" sweep long.yaml seed=0..1 -j 2 -o "$T/ref"
"$SAMX" sweep long.yaml seed=0..1 -j 2 -o "$T/int" 2>"$T/err" &
pid=$!
for _ in $(seq 600); do
    [ "$(cat "$T"/int/long/*/metrics.jsonl 2>/dev/null | wc -l)" -ge 3 ] && break
    sleep 0.05
done
kill -INT $pid
wait $pid
rc=$?
test $rc -eq 130 && grep -q "^samx: sweep 'long': 2 runs: 0 completed, 0 diverged, 2 interrupted" "$T/err" &&
    ! grep -q "error" "$T/err"
ok $? "SIGINT to the sweep: exit 130, both runs interrupted, no error reported (rc $rc)"
"$SAMX" sweep long.yaml seed=0..1 -j 2 -o "$T/int" 2>"$T/err"
ok $? "running the sweep again finishes it"
grep -q "^samx: 2 runs, 0 done before, 2 to run (2 of them resume), " "$T/err" &&
    [ "$(grep -c '^samx: resume [12]/2 seed=' "$T/err")" -eq 2 ]
ok $? "... and says that its runs resume ($(head -c 300 "$T/err" | tr '\n' '|'))"
bad=0
for d in "$T"/ref/long/*=*/; do
    e="$T/int/long/$(basename "$d")"
    cmp -s <(strip_timing "$d/metrics.jsonl") <(strip_timing "$e/metrics.jsonl") || bad=1
    cmp -s "$d/model.safetensors" "$e/model.safetensors" || bad=1
done
ok $bad "the resumed runs' records and weights equal an uninterrupted sweep's"

tap_done
