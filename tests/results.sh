#!/usr/bin/env bash
# results.sh SAMX: results a researcher can trust and read, end to end through the CLI, as TAP.
# Sweeps keep each invocation's manifest and commands (an emitted Slurm job still runs its own
# commands after other sweeps of the same name, GNU parallel's too), report each run and why one
# failed; tables of several metrics with schedules as text; figures with titles, labels, bands
# and left-out groups; named alternatives in sweep files. Tiny Fashion-MNIST configs.
set -u
SAMX=$(realpath "$1")
T=$(mktemp -d /tmp/samx-results.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/tap.sh"
cd "$T" || exit 1

cat >"$T/tiny.yaml" <<EOF
name: tiny
data: {name: fashion-mnist, limit_train: 500, limit_test: 200}
model: {name: mlp, hidden: [16]}
train: {epochs: 2, batch_size: 50}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
EOF

# --- each sweep its own files ---------------------------------------------------------------------
# The first sweep is emitted for Slurm and stays pending; a second, smaller sweep of the same name
# is emitted meanwhile. The first job's tasks must still find their own four commands.
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 -o "$T/r" --emit slurm >"$T/job1.sh" 2>"$T/err"
ok $? "--emit slurm of a 4-run sweep"
cmds1=$(sed -n 's/^line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" \(.*\))$/\1/p' "$T/job1.sh")
test -f "$cmds1" && [[ "$cmds1" == "$T"/r/tiny/sweeps/*/commands.txt ]] && [ "$(wc -l <"$cmds1")" -eq 4 ]
ok $? "the job reads its own commands file, results/<name>/sweeps/<hash>/commands.txt ($cmds1)"
grep -qx '#SBATCH --array=0-3' "$T/job1.sh" && grep -qx '#SBATCH --job-name=samx-tiny' "$T/job1.sh" &&
    grep -qx "#SBATCH --output=$(dirname "$cmds1")/slurm-%A_%a.out" "$T/job1.sh" &&
    grep -qx 'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"' "$T/job1.sh" &&
    grep -q '^#SBATCH --cpus-per-task=[1-9]' "$T/job1.sh" && bash -n "$T/job1.sh"
ok $? "slurm script: a 4-task array, its log beside its commands, threads from the allocation, valid bash"
! grep -q -- '--ntasks\|srun' "$T/job1.sh" &&
    "$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 -o "$T/r" --emit slurm --ntasks 3 \
        >"$T/job1n.sh" && grep -qx '#SBATCH --ntasks=3' "$T/job1n.sh" &&
    grep -q '^eval "exec srun --mpi=.* --ntasks=3 ' "$T/job1n.sh" && bash -n "$T/job1n.sh"
ok $? "--ntasks 3: the tasks run their lines through srun over 3 processes; without it, no srun"
"$SAMX" sweep tiny.yaml seed=0..1 -o "$T/r" --ntasks 2 --emit parallel >/dev/null 2>"$T/err"
rc=$?
[ $rc -eq 2 ] && one_error "$T/err" "--ntasks needs --emit slurm"
ok $? "--ntasks without --emit slurm: exit 2 ($rc) $(cat "$T/err")"
md5_1=$(md5sum "$cmds1" "$(dirname "$cmds1")/manifest.jsonl")
"$SAMX" sweep tiny.yaml optimizer.lr=0.2 seed=0 -o "$T/r" --emit slurm >"$T/job2.sh" &&
    "$SAMX" sweep tiny.yaml optimizer.lr=0.3 seed=0 -o "$T/r" -j 1 --emit parallel >"$T/par.sh"
ok $? "two more sweeps of the same name emitted (slurm, parallel)"
test "$(md5sum "$cmds1" "$(dirname "$cmds1")/manifest.jsonl")" = "$md5_1" &&
    grep -qx '#SBATCH --array=0-0' "$T/job2.sh" && ! grep -qF "$cmds1" "$T/job2.sh" &&
    test "$(ls -d "$T"/r/tiny/sweeps/*/ | wc -l)" -eq 3
ok $? "... each in its own directory: the first job's commands and manifest are unchanged"
# what an sbatch array task runs: the script with its task id (tests/slurm.sh submits to a real
# Slurm)
SLURM_ARRAY_TASK_ID=3 SLURM_CPUS_PER_TASK=1 bash "$T/job1.sh" 2>"$T/err"
rc=$?
want=$(sed -n 4p "$cmds1" | sed -E "s|.* -o ||")
test $rc -eq 0 && test "$(jq -r .status "$want/summary.json")" = completed &&
    test "$(ls -d "$T"/r/tiny/*=*/ | wc -l)" -eq 1 && [[ "$want" == */lr=0.05,seed=1-* ]]
ok $? "array task 3 of the first job runs line 4 of its own commands (lr=0.05 seed=1) (rc $rc)"
SLURM_ARRAY_TASK_ID=4 bash "$T/job1.sh" 2>"$T/err"
test $? -eq 2 && grep -q "no line 5 in $cmds1" "$T/err"
ok $? "a task past the array's end says so (exit 2)"
before=$(find "$T/r/tiny/sweeps" -type f -exec stat -c '%n %y' {} + | sort)
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 -o "$T/r" --emit slurm | cmp -s - "$T/job1.sh" &&
    test "$(find "$T/r/tiny/sweeps" -type f -exec stat -c '%n %y' {} + | sort)" = "$before"
ok $? "the same sweep again: the same script and files, untouched"
cp "$cmds1" "$T/keep" && echo "# edited" >>"$cmds1"
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 -o "$T/r" --emit slurm -q >/dev/null 2>"$T/err"
test $? -eq 1 && one_error "$T/err" "commands.txt' exists with other content; a sweep's files are never rewritten"
ok $? "a sweep never rewrites a commands file that differs (exit 1)"
cp "$T/keep" "$cmds1"

if command -v parallel >/dev/null; then
    sh "$T/par.sh" >/dev/null 2>&1 && grep -q "$T/r/tiny/sweeps/[0-9a-f]*/joblog" "$T/par.sh" &&
        test "$(jq -r .status "$T"/r/tiny/lr=0.3,seed=0-*/summary.json)" = completed &&
        test -s "$(sed -n 's/.*--joblog \([^ ]*\) .*/\1/p' "$T/par.sh")"
    ok $? "GNU parallel runs the emitted sweep, its joblog in its own sweep directory"
else
    skip "GNU parallel not installed"
fi
# the table reads every manifest: missing = planned by some sweep, never run
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 -o "$T/r" -j 2 -q 2>"$T/err"
ok $? "the first sweep run here (3 runs left) -q ($(head -c 200 "$T/err" | tr "\n" " "))"
"$SAMX" table "$T/r" --group optimizer.lr --format json >"$T/t.json"
jq -e 'map({key: .group["optimizer.lr"], value: [.n, .missing]}) | from_entries
       == {"0.05": [2, 0], "0.1": [2, 0], "0.2": [0, 1], "0.3": [1, 0]}' "$T/t.json" >/dev/null
ok $? "table over all manifests: lr 0.2 planned and never run is missing, nothing else"
"$SAMX" table "$T/r" --group optimizer.lr >"$T/t.md"
head -1 "$T/t.md" | grep -qx '| optimizer.lr | test_acc (final) | n | missing |' &&
    grep -qx '| 0.2 | – | 0 | 1 |' "$T/t.md"
ok $? "Markdown shows the missing column (non-zero) and no all-zero count columns"
"$SAMX" table "$T/r" --group optimizer.lr --counts | head -1 |
    grep -qx '| optimizer.lr | test_acc (final) | n | diverged | failed | interrupted | missing |'
ok $? "--counts shows every count column"

# --- a run killed by SIGKILL, reported with its reason ------------------------------------------
cat >"$T/long.yaml" <<EOF
name: long
data: {name: fashion-mnist, limit_train: 4000, limit_test: 200}
model: {name: mlp, hidden: [32]}
train: {epochs: 40, batch_size: 50}
optimizer: {name: sgd, lr: 0.05}
EOF
"$SAMX" sweep long.yaml seed=0 -o "$T/k" 2>"$T/err" &
pid=$!
for _ in $(seq 600); do
    [ "$(cat "$T"/k/long/*/metrics.jsonl 2>/dev/null | wc -l)" -ge 2 ] && break
    sleep 0.05
done
kill -KILL "$(pgrep -P $pid)"
wait $pid
rc=$?
test $rc -eq 1 &&
    grep -q "^samx: error: done 1/1: run 'seed=0-[0-9a-f]*' interrupted: killed by signal 9 (Killed); out of memory? rerun the sweep to resume it (log .*)$" "$T/err" &&
    grep -q "^samx: start 1/1 seed=0-" "$T/err"
ok $? "a SIGKILLed run: one line with the reason, exit 1 (rc $rc)"

# --- tables for papers ------------------------------------------------------------------------------
"$SAMX" table "$T/r" --group optimizer.lr --metric test_acc,train_loss --format json >"$T/t2.json"
bad=0
for lr in 0.05 0.1; do
    for m in test_acc train_loss; do
        want=$(jq -s --arg m $m 'map(.final[$m]) | (add / length) as $a | [$a, ((map((. - $a) * (. - $a)) | add) / (length - 1) | sqrt)]' \
               "$T"/r/tiny/lr=$lr,seed=*/summary.json)
        got=$(jq -c --arg lr $lr --arg m $m '.[] | select(.group["optimizer.lr"] == $lr and .metric == $m) | [.mean, .std]' "$T/t2.json")
        jq -en --argjson w "$want" --argjson g "$got" '(($w[0] - $g[0]) | fabs) < 1e-12 and (($w[1] - $g[1]) | fabs) < 1e-12' >/dev/null || bad=1
        row=$(printf '%.2f ± %.2f' "$(jq '.[0]' <<<"$want")" "$(jq '.[1]' <<<"$want")")
        "$SAMX" table "$T/r" --group optimizer.lr --metric test_acc,train_loss --precision 2 |
            grep "^| $lr |" | grep -qF "$row" || { bad=1; echo "# no '$row' for $lr $m"; }
    done
done
ok $bad "--metric test_acc,train_loss: both columns, equal to jq over summary.json; --precision 2"
"$SAMX" table "$T/r" --group optimizer.lr --metric test_acc,train_los 2>"$T/err"
test $? -eq 2 && one_error "$T/err" "'train_los' is not a key of the records of .* (did you mean 'train_loss'?)"
ok $? "a misspelt metric: did you mean"
"$SAMX" table "$T/r" --group optimizer.lrr 2>"$T/err"
test $? -eq 2 && one_error "$T/err" "--group key 'optimizer.lrr' is in no run's config (did you mean 'optimizer.lr'?)"
ok $? "a misspelt group key: did you mean"

# schedules as text; a diverged run shows the diverged column
"$SAMX" sweep tiny.yaml 'optimizer.lr={schedule: cosine, start: 0.05, end: 0, warmup: 1},{schedule: step, start: 0.1, gamma: 0.5, milestones: [1]},1000' \
    -o "$T/s" -j 2 -q
"$SAMX" table "$T/s" --group optimizer.lr >"$T/t.md"
grep -qx '| cosine 0.05→0 warmup 1 | [0-9.]* ± – | 1 | 0 |' "$T/t.md" &&
    grep -qx '| step 0.1 gamma 0.5 milestones \[1\] | [0-9.]* ± – | 1 | 0 |' "$T/t.md" &&
    grep -qx '| 1000 | – | 0 | 1 |' "$T/t.md" && head -1 "$T/t.md" | grep -q ' n | diverged |$'
ok $? "schedules as text (cosine 0.05→0 warmup 1); the diverged column because a run diverged"
"$SAMX" table "$T/s" --group optimizer.lr --format latex | grep -qF 'cosine 0.05$\to$0 warmup 1 &'
ok $? "... and in LaTeX"

# the same config at two thread counts (the same numbers), then with another BLAS core
"$SAMX" run tiny.yaml seed=0 -t 1 -q -o "$T/th/tiny/a" && "$SAMX" run tiny.yaml seed=1 -t 2 -q -o "$T/th/tiny/b"
"$SAMX" table "$T/th" 2>"$T/err" >/dev/null
test $? -eq 0 && [ ! -s "$T/err" ]
ok $? "a group of runs at 1 and 2 threads: no warning, the thread count does not change a result ($(head -c 200 "$T/err"))"
OPENBLAS_CORETYPE=Prescott "$SAMX" run tiny.yaml seed=2 -t 1 -q -o "$T/th/tiny/c"
"$SAMX" table "$T/th" 2>"$T/err" >/dev/null
core=$(jq -r .openblas_core "$T/th/tiny/a/meta.json")
blocks=$(jq -r .work_blocks "$T/th/tiny/a/meta.json")
test $? -eq 0 && [ "$(wc -l <"$T/err")" -eq 1 ] &&
    grep -qx "samx: warning: 1 group mixes BLAS cores, work splits or MPI world sizes, so its runs are not bit-comparable (2 runs with $core/$blocks blocks, 1 run with Prescott/$blocks blocks)" "$T/err"
ok $? "a group of runs with two BLAS cores: one warning line with the counts ($(head -c 300 "$T/err"))"

# --- figures for papers -----------------------------------------------------------------------------
"$SAMX" run tiny.yaml optimizer.lr=0.05 seed=5 'eval.hessian_trace={probes: 2, rel_err: 0, examples: 100}' -q -o "$T/h/tiny/h"
cp -r "$T/r/tiny/lr=0.1,seed=0-"* "$T/h/tiny/"
"$SAMX" plot "$T/h" --group optimizer.lr --y hessian_trace -o "$T/fig/h.png" 2>"$T/err"
test $? -eq 0 && [ "$(wc -l <"$T/err")" -eq 1 ] &&
    grep -qx "samx: warning: 1 group without 'hessian_trace' left out of the figure: optimizer.lr=0.1 (1 run)" "$T/err" &&
    test "$(grep -c '^# block' "$T/fig/h.png.dat")" -eq 1 && grep -q '^# block 0: optimizer.lr=0.05 (1 run)$' "$T/fig/h.png.dat"
ok $? "--y a key one group lacks: draws the group that has it, names the one left out"
"$SAMX" table "$T/h" --group optimizer.lr --metric test_acc,hessian_trace --format json |
    jq -e 'map(select(.metric == "hessian_trace")) | map({key: .group["optimizer.lr"], value: .n}) | from_entries == {"0.05": 1, "0.1": 0}' >/dev/null
ok $? "table: a metric one group lacks is an empty cell there"

"$SAMX" plot "$T/r/tiny" --group optimizer.lr --y train_loss -o "$T/fig/loss.png" --title 'Tiny MLP, SGD' \
    --xlabel 'training epoch' --ylabel 'training loss' --labels 'lr 0.05,lr 0.1,lr 0.3' --logy --band sem 2>"$T/err"
ok $? "plot with a title, axis and legend labels, log y, standard-error bands ($(head -c 200 "$T/err" | tr "\n" " "))"
gp="$T/fig/loss.png.gp"
grep -qx "set title 'Tiny MLP, SGD'" "$gp" && grep -qx "set xlabel 'training epoch'" "$gp" &&
    grep -qx "set ylabel 'training loss'" "$gp" && grep -qx 'set logscale y' "$gp" &&
    grep -q "title 'lr 0.05'" "$gp" && grep -q "title 'lr 0.1'" "$gp" && grep -q "title 'lr 0.3'" "$gp" &&
    grep -qx 'set xtics 1, 1' "$gp" && grep -qx 'set xrange \[1:2\]' "$gp"
ok $? "the script: title, labels, legend, log y, integer epoch ticks from 1"
"$SAMX" plot "$T/r/tiny" --group optimizer.lr --y train_loss --x grad_evals -o "$T/fig/ge.png" 2>/dev/null &&
    grep -x 'set xtics .*' "$T/fig/ge.png.gp" | awk -F'[ ,]+' '{ s = $4; while (s >= 10) s /= 10
        exit !((s == 1 || s == 2 || s == 5) && $3 % $4 == 0) }'
ok $? "integer x of another key: round tick steps (1, 2 or 5 times a power of ten) from a multiple of the step ($(grep xtics "$T/fig/ge.png.gp"))"
# the band: mean ± sample std / sqrt(n), at epoch 2 of lr 0.05, against jq over metrics.jsonl
want=$(cat "$T"/r/tiny/lr=0.05,seed=*/metrics.jsonl | jq -s 'map(select(.epoch == 2) | .train_loss)
        | (add / length) as $m | [$m, $m + ((map((. - $m) * (. - $m)) | add) / (length - 1) | sqrt) / (length | sqrt)]')
awk '/^# block 0:/ { b = 1 } /^# block 1:/ { b = 0 } b && $1 == 2 { print "[" $2 "," $4 "]" }' "$T/fig/loss.png.dat" >"$T/got"
jq -en --argjson w "$want" --slurpfile g "$T/got" '(($w[0] - $g[0][0]) | fabs) < 1e-8 and (($w[1] - $g[0][1]) | fabs) < 1e-8' >/dev/null &&
    ! grep -q '^0 ' "$T/fig/loss.png.dat"
ok $? "standard-error band = std/sqrt(n) from the records; no epoch 0 by default"
"$SAMX" plot "$T/r/tiny" --group optimizer.lr --y train_loss -o "$T/fig/loss.pdf" --from 0 2>/dev/null
grep -q '^0 ' "$T/fig/loss.pdf.dat" && ! grep -q '^0 ' "$T/fig/loss.png.dat" && grep -q "loss.png.dat" "$gp"
ok $? "--from 0 includes initialization; loss.pdf and loss.png keep their own .dat and .gp"
if command -v gnuplot >/dev/null; then
    head -c 8 "$T/fig/loss.png" | grep -q PNG && head -c 5 "$T/fig/loss.pdf" | grep -q '%PDF'
    ok $? "gnuplot drew the PNG and the PDF"
else
    skip "gnuplot not installed"
fi
# A log y axis is labelled over its whole height: train_loss 0.4 at epoch 1 and 1.6 at epoch 2
# (one run's records so rewritten) leaves at most 30% of the axis without a labelled tick.
mkdir -p "$T/lg/tiny" && cp -r "$T/r/tiny/lr=0.1,seed=0-"* "$T/lg/tiny/"
d=$(ls -d "$T"/lg/tiny/*/)
jq -c 'if .epoch == 1 then .train_loss = 0.4 elif .epoch == 2 then .train_loss = 1.6 else . end' \
    "$d/metrics.jsonl" >"$T/m" && cp "$T/m" "$d/metrics.jsonl"
"$SAMX" plot "$T/lg" --y train_loss --logy -o "$T/fig/lg.png" 2>"$T/err" &&
    python3 - "$T/fig/lg.png.gp" <<'EOF'
import math, re, sys
gp = open(sys.argv[1]).read()
lo, hi = map(float, re.search(r"^set yrange \[([^:]+):([^\]]+)\]$", gp, re.M).groups())
tics = [float(t) for t in re.search(r"^set ytics \((.*)\)$", gp, re.M).group(1).split(",")]
edges = [lo] + sorted(tics) + [hi]
worst = max(math.log(b / a) for a, b in zip(edges, edges[1:])) / math.log(hi / lo)
assert worst <= 0.3, (lo, hi, tics, worst)
EOF
ok $? "a log y axis from 0.4 to 1.6 has labelled ticks over its whole height ($(grep '^set ytics' "$T/fig/lg.png.gp"))"
mkdir -p "$T/c/tiny" && cp -r "$T/r/tiny/lr=0.1,seed=0-"* "$T/c/tiny/"
d=$(ls -d "$T"/c/tiny/*/)
sed -i '2s/.*/{"epoch": 1, "train_loss": 0.5/' "$d/metrics.jsonl"
"$SAMX" plot "$T/c" --y train_loss -o "$T/fig/c.png" 2>"$T/err"
test $? -eq 1 && one_error "$T/err" "${d}metrics.jsonl:2: not a JSON record"
ok $? "a corrupt record is reported as file:line (exit 1)"
"$SAMX" table "$T/c" --at best:test_loss 2>"$T/err"
test $? -eq 1 && one_error "$T/err" "metrics.jsonl:2: not a JSON record"
ok $? "... by table --at best: too"
# valid JSON whose value is not a number: as corrupt as a cut line, never a point left out
sed -i '2s/.*/{"epoch": 1, "train_loss": "0.5", "test_loss": "0.5"}/' "$d/metrics.jsonl"
"$SAMX" plot "$T/c" --y train_loss -o "$T/fig/c.png" 2>"$T/err"
test $? -eq 1 && one_error "$T/err" "${d}metrics.jsonl:2: 'train_loss' is not a number"
ok $? "a record whose value is a string is reported as file:line by plot (exit 1)"
"$SAMX" table "$T/c" --at best:test_loss 2>"$T/err"
test $? -eq 1 && one_error "$T/err" "metrics.jsonl:2: '[a-z_]*' is not a number"
ok $? "... and by table --at best:"
perl -0pi -e 's/"test_loss":\s*[-0-9.e+]+/"test_loss": "low"/' "$d/summary.json" # final's
"$SAMX" table "$T/c" --metric test_loss 2>"$T/err"
test $? -eq 1 && one_error "$T/err" "${d}summary.json (final record): 'test_loss' is not a number"
ok $? "... and a summary.json whose final value is a string, by table (exit 1)"
"$SAMX" plot "$T/r/tiny" --group optimizer.lr --y train_los -o "$T/fig/x.png" 2>"$T/err"
test $? -eq 2 && one_error "$T/err" "no completed run has records of 'train_los'.*(did you mean 'train_loss'?)"
ok $? "plot: a misspelt --y, did you mean"

# --- named alternatives -----------------------------------------------------------------------------
cat >"$T/methods.yaml" <<EOF
config: tiny.yaml
parameters:
  optimizer:
    _shared: {base: {name: sgd, lr: 0.1, momentum: 0.9}, rho: 0.05}
    sgd: {name: sgd, lr: 0.1, momentum: 0.9, base: null, rho: null}
    sam: {name: sam}
    asam: {name: asam, rho: 0.5}
  seed: 0..1
EOF
"$SAMX" sweep methods.yaml -o "$T/n" --dry-run >"$T/out"
test "$(sed 's|.* -o .*/||; s|-[0-9a-f]*$||' "$T/out" | tr '\n' ' ')" = \
    "optimizer=sgd,seed=0 optimizer=sgd,seed=1 optimizer=sam,seed=0 optimizer=sam,seed=1 optimizer=asam,seed=0 optimizer=asam,seed=1 "
ok $? "run ids name the alternative: optimizer=sam,seed=0"
grep -qF "'optimizer={base: {name: sgd, lr: 0.1, momentum: 0.9}, rho: 0.5, name: asam}' seed=0 " "$T/out" &&
    grep -qF "'optimizer={name: sgd, lr: 0.1, momentum: 0.9}' seed=1 " "$T/out"
ok $? "each alternative is its subtree with _shared merged under it (null drops a shared key)"
"$SAMX" sweep methods.yaml optimizer=sam,sgd seed=0 -o "$T/n" -q 2>"$T/err"
ok $? "optimizer=sam,sgd on the command line runs those alternatives ($(head -c 200 "$T/err" | tr "\n" " "))"
test "$(cd "$T/n/tiny" && ls -d optimizer=* | sed 's/-[0-9a-f]*$//' | tr '\n' ' ')" = "optimizer=sam,seed=0 optimizer=sgd,seed=0 " &&
    grep -qx '  rho: 0.05' "$T"/n/tiny/optimizer=sam,seed=0-*/config.yaml &&
    jq -se 'map(.labels) == [["optimizer=sam", "seed=0"], ["optimizer=sgd", "seed=0"]]' "$T"/n/tiny/sweeps/*/manifest.jsonl >/dev/null
ok $? "... into optimizer=sam,seed=0-HASH with the shared rho; the manifest keeps the labels"
"$SAMX" table "$T/n" --group optimizer.name --format json | jq -e 'map(.group["optimizer.name"]) == ["sam", "sgd"]' >/dev/null
ok $? "table groups them by optimizer.name"
"$SAMX" table "$T/n" --group optimizer 2>"$T/err"
test $? -eq 2 && one_error "$T/err" "--group key 'optimizer' is in no run's config (did you mean 'optimizer.name'?)"
ok $? "--group of a section (the alternatives' key): did you mean its name key"
"$SAMX" table "$T"/n/tiny/optimizer=sam,seed=0-* --group optimizer.lr 2>"$T/err"
test $? -eq 2 && one_error "$T/err" "--group key 'optimizer.lr' is in no run's config (did you mean 'optimizer.base.lr'?)"
ok $? "--group with a level left out: did you mean the key with it"
"$SAMX" sweep methods.yaml optimizer=sgx -o "$T/n" --dry-run 2>"$T/err"
test $? -eq 2 && one_error "$T/err" "'sgx' is not one of the alternatives of 'optimizer' (did you mean 'sgd'?)"
ok $? "an unknown alternative: did you mean"
"$SAMX" help sweep | grep -q '_shared'
ok $? "samx help sweep documents named alternatives"

tap_done
