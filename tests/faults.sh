#!/usr/bin/env bash
# faults.sh SAMX: the run directory under damage, kills, races and full disks, as TAP.
# Every case ends in a run equal to an uninterrupted one (records without timing fields, and
# model.safetensors byte for byte) or in a clear one-line error, never in a 'completed' run with
# other content. Synthetic data and one thread keep each run well under a second.
set -u
SAMX=$(realpath "$1")
T=$(mktemp -d /tmp/samx-faults.XXXXXX)
M=$T/mnt
# A subshell that receives SIGTERM before bash has reset its traps runs this trap too (the
# guard below is killed that way): only the script itself may clean up.
TOP=$BASHPID
cleanup() {
    [ "$BASHPID" = "$TOP" ] || return 0
    mountpoint -q "$M" 2>/dev/null && umount "$M"
    rm -rf "$T"
}
trap cleanup EXIT
. "$(dirname "$0")/tap.sh"

cat >"$T/f.yaml" <<EOF
name: f
seed: 1
data: {name: synthetic-linear, n_train: 6000, n_test: 500, features: 32}
model: {name: mlp, hidden: [64, 64]}
train: {epochs: 20, batch_size: 50}
optimizer: {name: sam, rho: 0.05, base: {name: sgd, lr: 0.02, momentum: 0.9}}
EOF
# (in the background, samx itself rather than a function, so that $! is samx)
run() { "$SAMX" run "$T/f.yaml" -t 1 -q "$@"; }

t0=$(date +%s%N)
run -o "$T/ref" 2>"$T/err"
ok $? "reference run exits 0 ($(head -c 200 "$T/err"))"
WALL_MS=$((($(date +%s%N) - t0) / 1000000))
strip_timing "$T/ref/metrics.jsonl" >"$T/ref.rec"

# same_as_ref DIR: completed, records and weights equal to the uninterrupted run's
same_as_ref() {
    grep -qE '"status":\s*"completed"' "$1/summary.json" 2>/dev/null &&
        grep -qE '"status":\s*"completed"' "$1/meta.json" &&
        strip_timing "$1/metrics.jsonl" | cmp -s - "$T/ref.rec" &&
        cmp -s "$1/model.safetensors" "$T/ref/model.safetensors"
}
# status_of DIR FILE: the "status" of DIR/FILE, or "none"
status_of() { sed -nE 's/.*"status":\s*"([a-z]+)".*/\1/p' "$1/$2" 2>/dev/null | head -1 | grep . || echo none; }
# consistent DIR: summary.json absent (unfinished) or agreeing with meta.json; and a completed
# summary has the reference content
consistent() {
    local s
    s=$(status_of "$1" summary.json)
    [ "$s" = none ] && return 0
    [ "$s" = "$(status_of "$1" meta.json)" ] || return 1
    [ "$s" != completed ] || same_as_ref "$1"
}
# interrupted DIR [OPTS]: a run stopped by SIGINT after at least 8 records
interrupted() {
    local d=$1
    shift
    rm -rf "$d"
    "$SAMX" run "$T/f.yaml" -t 1 -q -o "$d" "$@" 2>/dev/null &
    local pid=$!
    for _ in $(seq 400); do
        [ "$(cat "$d/metrics.jsonl" 2>/dev/null | wc -l)" -ge 8 ] && break
        sleep 0.01
    done
    kill -INT $pid
    wait $pid
}
# st_meta FILE KEY VALUE: set a checkpoint metadata string, keeping the safetensors layout
st_meta() {
    perl -e '
        my ($f, $k, $v) = @ARGV;
        open(my $h, "<:raw", $f) or die; local $/; my $b = <$h>; close $h;
        my $n = unpack("Q<", substr($b, 0, 8));
        my $j = substr($b, 8, $n); $j =~ s/\s+$//;
        $j =~ s/"\Q$k\E":"[^"]*"/"$k":"$v"/ or die "no $k";
        $j .= " " x ((8 - length($j) % 8) % 8);
        open($h, ">:raw", $f) or die; print $h pack("Q<", length $j), $j, substr($b, 8 + $n); close $h;
    ' "$@"
}
# st_flip FILE: flip one bit of the first tensor's bytes
st_flip() {
    perl -e '
        my ($f) = @ARGV;
        open(my $h, "+<:raw", $f) or die; read($h, my $l, 8); my $n = unpack("Q<", $l);
        seek($h, 8 + $n + 101, 0); read($h, my $c, 1);
        seek($h, 8 + $n + 101, 0); print $h chr(ord($c) ^ 0x10); close $h;
    ' "$1"
}

# --- B: the lock --------------------------------------------------------------------------------
race_ok=0
race_msg=""
for i in $(seq 20); do
    rm -rf "$T/race"
    "$SAMX" run "$T/f.yaml" -t 1 -q -o "$T/race" 2>"$T/r1" &
    p1=$!
    "$SAMX" run "$T/f.yaml" -t 1 -q -o "$T/race" 2>"$T/r2" &
    p2=$!
    wait $p1
    r1=$?
    wait $p2
    r2=$?
    if [ $r1 -eq 0 ] && [ $r2 -eq 75 ]; then
        loser=$T/r2
    elif [ $r1 -eq 75 ] && [ $r2 -eq 0 ]; then
        loser=$T/r1
    else
        race_msg="trial $i: exits $r1 and $r2"
        break
    fi
    if ! one_error "$loser" "'$T/race': busy: another samx is training this run directory$"; then
        race_msg="trial $i: message '$(head -c 200 "$loser")'"
        break
    fi
    if ! same_as_ref "$T/race"; then
        race_msg="trial $i: records or weights differ from the uninterrupted run"
        break
    fi
    race_ok=$((race_ok + 1))
done
test $race_ok -eq 20
ok $? "two samx run at once, 20 trials: one trains, the other exits 75 'busy', records complete ($race_ok/20 ${race_msg})"

# --- D: SIGKILL at random moments, then resume ------------------------------------------------
kill_ok=0
kill_msg=""
RANDOM=7
for i in $(seq 20); do
    rm -rf "$T/k"
    "$SAMX" run "$T/f.yaml" -t 1 -q -o "$T/k" 2>/dev/null &
    pid=$!
    sleep "$(awk -v w=$WALL_MS -v r=$RANDOM 'BEGIN { printf "%.3f", w * r / 32768 / 1000 }')"
    kill -KILL $pid 2>/dev/null
    wait $pid 2>/dev/null
    if ! consistent "$T/k"; then
        kill_msg="trial $i: summary.json '$(status_of "$T/k" summary.json)', meta.json '$(status_of "$T/k" meta.json)' after the kill"
        break
    fi
    if ! run -o "$T/k" 2>"$T/err" || ! same_as_ref "$T/k"; then
        kill_msg="trial $i: resume differs ($(head -c 200 "$T/err"))"
        break
    fi
    kill_ok=$((kill_ok + 1))
done
test $kill_ok -eq 20
ok $? "SIGKILL at a random moment then resume, 20 trials: consistent status files, records and weights equal ($kill_ok/20 ${kill_msg})"

# --- C1: records that do not match the checkpoint are restored, never cut ----------------------
interrupted "$T/int"
test $? -eq 130
ok $? "SIGINT stops a run (exit 130)"
test "$(status_of "$T/int" summary.json)" = interrupted && test "$(status_of "$T/int" meta.json)" = interrupted
ok $? "an interrupted run says so in summary.json and meta.json"

cp -a "$T/int" "$T/garbled"
sed -i '3s/.*/{"epoch": 2, garbled/' "$T/garbled/metrics.jsonl"
run -o "$T/garbled" 2>"$T/err"
ok $? "resume with a garbled metrics.jsonl line 3 exits 0"
grep -q "^samx: warning: '$T/garbled/metrics.jsonl' line 3 does not match the checkpoint; restored" "$T/err" &&
    same_as_ref "$T/garbled"
ok $? "the garbled line is named and every record restored: equal to an uninterrupted run"

for how in missing empty; do
    cp -a "$T/int" "$T/$how"
    if [ $how = missing ]; then rm "$T/$how/metrics.jsonl"; else : >"$T/$how/metrics.jsonl"; fi
    run -o "$T/$how" 2>"$T/err" && grep -q "metrics.jsonl' is $how; restored the records" "$T/err" &&
        same_as_ref "$T/$how"
    ok $? "a $how metrics.jsonl is restored from the checkpoint: equal to an uninterrupted run"
done

cp -a "$T/int" "$T/extra"
tail -1 "$T/extra/metrics.jsonl" >>"$T/extra/metrics.jsonl"
run -o "$T/extra" 2>"$T/err" && ! grep -q warning "$T/err" && same_as_ref "$T/extra"
ok $? "a record after the checkpoint's (killed before the checkpoint) is computed again"

# --- C2: a final checkpoint is finished, not trained on -----------------------------------------
cat >"$T/div.yaml" <<EOF
name: div
data: {name: synthetic-linear, n_train: 2000, n_test: 200, features: 32}
model: {name: mlp, hidden: [64]}
train: {epochs: 5, batch_size: 50}
optimizer: {name: sgd, lr: 1000}
EOF
"$SAMX" run "$T/div.yaml" -o "$T/div" -t 1 -q 2>/dev/null
test $? -eq 0 && test "$(status_of "$T/div" summary.json)" = diverged
ok $? "a diverging run ends with status diverged"
cp "$T/div/metrics.jsonl" "$T/div.rec"
rm "$T/div/summary.json" "$T/div/model.safetensors"
"$SAMX" run "$T/div.yaml" -o "$T/div" -t 1 -q 2>"$T/err"
test $? -eq 0 && cmp -s "$T/div/metrics.jsonl" "$T/div.rec" &&
    test "$(status_of "$T/div" summary.json)" = diverged && test "$(status_of "$T/div" meta.json)" = diverged &&
    test -s "$T/div/model.safetensors"
ok $? "diverged, killed before summary.json: resuming trains nothing more and ends diverged"

cp -a "$T/ref" "$T/fin"
rm "$T/fin/summary.json" "$T/fin/model.safetensors"
"$SAMX" run "$T/f.yaml" -t 1 -o "$T/fin" 2>"$T/err" && same_as_ref "$T/fin" &&
    tail -1 "$T/err" | grep -q "^samx: completed 20 epochs in .*; run directory '$T/fin'$"
ok $? "completed, killed before summary.json: resuming only writes the final files, and says the result ($(tail -1 "$T/err" | head -c 160))"

# A failed write of the final meta.json stands for a kill just before it: the run must be plainly
# unfinished (no summary.json), not a completed summary beside a running meta.json.
rm -rf "$T/order"
"$SAMX" run "$T/f.yaml" -t 1 -q -o "$T/order" 2>"$T/err" &
pid=$!
for _ in $(seq 400); do
    [ "$(cat "$T/order/metrics.jsonl" 2>/dev/null | wc -l)" -ge 3 ] && break
    sleep 0.01
done
rm -f "$T/order/meta.json" && mkdir "$T/order/meta.json"
wait $pid
rc=$?
test $rc -eq 1 && ! test -e "$T/order/summary.json" && one_error "$T/err" "meta.json"
ok $? "the final meta.json not written: no summary.json either (rc $rc: $(head -c 160 "$T/err"))"
rmdir "$T/order/meta.json"
run -o "$T/order" 2>/dev/null && same_as_ref "$T/order"
ok $? "running it again finishes it as an uninterrupted run"

# --- C3: checkpoints are checked, not trusted -------------------------------------------------
cp -a "$T/int" "$T/flip"
st_flip "$T/flip/checkpoint.safetensors"
run -o "$T/flip" 2>"$T/err"
test $? -eq 1 && one_error "$T/err" "'$T/flip/checkpoint.safetensors': checksum does not match" &&
    test "$(status_of "$T/flip" summary.json)" != completed
ok $? "a flipped weight bit is a checksum error (exit 1, naming the file): $(head -c 160 "$T/err")"

for kv in epoch=0x1p+40 step_in_epoch=-0x1p+4 step=-0x1p+0 acc_count=0x1p+60 wall_seconds=nan \
    optim.base.momentum_started=0x1p-1 optim.base.momentum_started=nan; do
    k=${kv%%=*}
    rm -rf "$T/range"
    cp -a "$T/int" "$T/range"
    st_meta "$T/range/checkpoint.safetensors" "$k" "${kv#*=}"
    run -o "$T/range" 2>"$T/err"
    test $? -eq 1 && one_error "$T/err" "'$T/range/checkpoint.safetensors': checkpoint field '$k' is .*outside" &&
        test "$(status_of "$T/range" summary.json)" != completed
    ok $? "checkpoint $k = ${kv#*=} is a range error (exit 1, naming the file and field): $(head -c 160 "$T/err")"
done
# The work split and world size are compared with this run's: a damaged one is the file's
# error (exit 1), not another samx's split (exit 2). world_size is written by MPI runs only.
for kv in 'work_blocks=0' 'work_blocks=4","world_size":"-1'; do
    v=${kv#*=}
    k=work_blocks
    case $v in *world_size*) k=world_size ;; esac
    rm -rf "$T/range"
    cp -a "$T/int" "$T/range"
    st_meta "$T/range/checkpoint.safetensors" work_blocks "$v"
    run -o "$T/range" 2>"$T/err"
    rc=$?
    test $rc -eq 1 && one_error "$T/err" "'$T/range/checkpoint.safetensors': checkpoint field '$k' is .*outside"
    ok $? "checkpoint $k out of range is the file's error (exit $rc, naming the file and field): $(head -c 160 "$T/err")"
done
rm -rf "$T/range"
cp -a "$T/int" "$T/range"
st_meta "$T/range/checkpoint.safetensors" status completed
run -o "$T/range" 2>"$T/err"
test $? -eq 1 && one_error "$T/err" "checkpoint.safetensors': checkpoint position .* is inconsistent"
ok $? "a mid-run checkpoint claiming 'completed' is an error: $(head -c 160 "$T/err")"

# --- A: identity, paths, threads ---------------------------------------------------------------
mkdir -p "$T/id/cfg" "$T/id/elsewhere"
cp "$T/f.yaml" "$T/id/cfg/f.yaml"
(cd "$T/id" && "$SAMX" run cfg/f.yaml seed=1 -t 1 -q 2>/dev/null)
dir1=$(ls -d "$T"/id/results/f/seed=1-* 2>/dev/null)
test -n "$dir1" && same_as_ref "$dir1"
ok $? "a run with overrides trains into results/f/seed=1-<hash>"
(cd "$T/id" && "$SAMX" run "$dir1/config.yaml" -t 1 2>"$T/err")
test $? -eq 0 && grep -q "already complete" "$T/err" && test "$(ls "$T/id/results/f" | wc -l)" -eq 1
ok $? "samx run of its own config.yaml finds it (complete), no second directory ($(ls "$T/id/results/f" | tr '\n' ' '))"
# The run's directory under another results root (a sweep -o ROOT): its config.yaml finds it
mkdir -p "$T/id/alt/f" && cp -a "$dir1" "$T/id/alt/f/"
(cd "$T/id" && "$SAMX" run "$T/id/alt/f/${dir1##*/}/config.yaml" -t 1 2>"$T/err")
test $? -eq 0 && grep -q "'$T/id/alt/f/${dir1##*/}' is already complete" "$T/err" &&
    test "$(ls "$T/id/results/f" | wc -l)" -eq 1
ok $? "samx run of a config.yaml under another results root finds that run ($(head -c 200 "$T/err"))"
# A job emitted before the same config ran under another label: the job finds that run, and
# samx table counts the plan as run, once
(cd "$T/id" && "$SAMX" sweep cfg/f.yaml seed=1,2 -o "$T/id/em" --emit sh -q >"$T/id/job.sh")
mkdir -p "$T/id/em/f" && cp -a "$dir1" "$T/id/em/f/default-${dir1##*-}"
"$SAMX" table "$T/id/em/f" --metric test_loss --format csv 2>/dev/null | tail -1 | grep -q ',1,0,0,0,1$'
ok $? "samx table: a planned run held under another label is not missing ($("$SAMX" table "$T/id/em/f" --metric test_loss --format csv 2>&1 | tail -1))"
sed -i '/ seed=2 /d' "$T/id/job.sh"
(cd "$T/id" && sh job.sh 2>"$T/err")
test $? -eq 0 && grep -q "'$T/id/em/f/default-${dir1##*-}' holds this config's run" "$T/err" &&
    test "$(ls "$T/id/em/f" | grep -vc '^sweeps$')" -eq 1
ok $? "an emitted job whose config ran under another label finds that run, trains nothing ($(ls "$T/id/em/f" | tr '\n' ' '))"
(cd "$T/id" && "$SAMX" sweep cfg/f.yaml optimizer.rho=0.05 2>"$T/err")
test $? -eq 0 && test "$(ls -d "$T"/id/results/f/*/ | grep -vc '/sweeps/$')" -eq 1 &&
    "$SAMX" table "$T/id/results/f" --metric test_loss --format json 2>/dev/null | grep -qE '"n":\s*1\b'
ok $? "a sweep of the same config spelled otherwise skips it; samx table counts it once"
# the same values written otherwise: numbers (0.050, 2e-2, .9), a default given (drop_last),
# keys in another order; then a sweep over a default value and another
(cd "$T/id" && "$SAMX" run cfg/f.yaml optimizer.rho=0.050 train.drop_last=false \
    'optimizer.base={momentum: .9, lr: 2e-2, name: sgd}' -t 1 2>"$T/err")
test $? -eq 0 && grep -q "already complete" "$T/err" && test "$(ls -d "$T"/id/results/f/*/ | grep -vc '/sweeps/$')" -eq 1
ok $? "numbers, defaults and key order written otherwise find the same run ($(ls "$T/id/results/f" | tr '\n' ' '))"
(cd "$T/id" && "$SAMX" sweep cfg/f.yaml train.drop_last=false,true train.epochs=2 -q 2>"$T/err" &&
    "$SAMX" sweep cfg/f.yaml train.drop_last=false,true -q 2>"$T/err")
test $? -eq 0 && test "$(ls -d "$T"/id/results/f/*/ | grep -vc '/sweeps/$')" -eq 4 &&
    "$SAMX" table "$T/id/results/f" --group train.drop_last,train.epochs --format json 2>/dev/null |
    jq -e 'map([.group["train.drop_last"], .group["train.epochs"], .n]) | sort ==
           [["false", "2", 1], ["false", "20", 1], ["true", "2", 1], ["true", "20", 1]]' >/dev/null
ok $? "a sweep over a default value skips the run without it; samx table counts each once ($(head -c 200 "$T/err"))"

cp "$T/ref/model.safetensors" "$T/id/cfg/init.safetensors"
sed 's/hidden: \[64, 64\]}/hidden: [64, 64], init_from: init.safetensors}/' "$T/f.yaml" >"$T/id/cfg/rel.yaml"
(cd "$T/id/elsewhere" && "$SAMX" run ../cfg/rel.yaml -o "$T/rel" -t 1 -q 2>"$T/err")
test $? -eq 0 && grep -q "init_from: $T/id/cfg/init.safetensors" "$T/rel/config.yaml"
ok $? "a relative model.init_from resolves against the config's directory; config.yaml records it absolute ($(head -c 160 "$T/err"))"

interrupted "$T/thr"
"$SAMX" run "$T/f.yaml" -t 2 -q -o "$T/thr" 2>"$T/err" && same_as_ref "$T/thr"
ok $? "resuming with another thread count (1 -> 2) finishes the run as an uninterrupted one ($(head -c 200 "$T/err"))"
interrupted "$T/core"
OPENBLAS_CORETYPE=Prescott run -o "$T/core" 2>"$T/err"
rc=$?
test $rc -eq 2 && one_error "$T/err" "'$T/core': trained with OpenBLAS core [A-Za-z0-9]* and a work split of [0-9]* blocks, this run has Prescott and "
ok $? "resuming with another BLAS core is refused (exit $rc): $(head -c 200 "$T/err")"
run -o "$T/core" 2>/dev/null && same_as_ref "$T/core"
ok $? "resuming with the same BLAS core finishes the run as an uninterrupted one"

# --- C4: signals from the start, a reason for every failure -----------------------------------
cat >"$T/fm.yaml" <<EOF
name: fm
data: {name: fashion-mnist}
model: {name: mlp, hidden: [32]}
train: {epochs: 1}
optimizer: {name: sgd, lr: 0.1}
EOF
if [ -d /usr/share/datasets/fashion-mnist ]; then
    "$SAMX" run "$T/fm.yaml" -o "$T/fm" -t 1 -q 2>"$T/err" &
    pid=$!
    sleep 0.3
    kill -TERM $pid
    wait $pid
    rc=$?
    test $rc -eq 130 && grep -q "^samx: interrupted by SIGTERM" "$T/err" && ! test -e "$T/fm/summary.json" ||
        { test $rc -eq 130 && grep -q "^samx: interrupted by SIGTERM" "$T/err" && test "$(status_of "$T/fm" summary.json)" = interrupted; }
    ok $? "SIGTERM while loading data: exit 130 with a reason (rc $rc: $(head -c 160 "$T/err"))"
    "$SAMX" sweep "$T/fm.yaml" seed=0,1 -o "$T/fsw" 2>"$T/err" &
    pid=$!
    sleep 0.3
    kill -TERM $pid
    wait $pid
    rc=$?
    test $rc -eq 130 && grep -q "^samx: interrupted" "$T/err"
    ok $? "SIGTERM to a sweep while its first run starts: exit 130 with a reason (rc $rc: $(head -c 160 "$T/err"))"
else
    skip "no Fashion-MNIST: SIGTERM while loading data not checked"
    skip "no Fashion-MNIST: SIGTERM during a sweep's pre-check not checked"
fi

# A read that blocks (a FIFO no one writes) is broken by the signal with EINTR: still an
# interruption, not a read error.
mkfifo "$T/fifo"
"$SAMX" run "$T/f.yaml" model.init_from="$T/fifo" -o "$T/ff" -t 1 -q 2>"$T/err" &
pid=$!
for _ in $(seq 500); do
    grep -q wait_for_partner "/proc/$pid/wchan" 2>/dev/null && break
    sleep 0.01
done
kill -TERM $pid
# (a samx that let the signal pass would block there for good)
(sleep 20 && kill -KILL $pid 2>/dev/null) &
guard=$!
wait $pid
rc=$?
kill $guard 2>/dev/null
test $rc -eq 130 && [ "$(wc -l <"$T/err")" -eq 1 ] &&
    grep -q "^samx: interrupted by SIGTERM while loading .*nothing was written" "$T/err" && ! test -e "$T/ff"
ok $? "SIGTERM while a read blocks: exit 130 with a reason, nothing written (rc $rc: $(head -c 160 "$T/err"))"

# 40000 runs keep the pre-check busy for about 2.5 s here: the signal at 0.3 s comes before any
# run starts, on a machine several times faster too.
"$SAMX" sweep "$T/f.yaml" seed=0..39999 -o "$T/fpc" 2>"$T/err" &
pid=$!
sleep 0.3
kill -TERM $pid
wait $pid
rc=$?
test $rc -eq 130 && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "^samx: interrupted by SIGTERM" "$T/err" &&
    ! ls -d "$T"/fpc/f/seed=* >/dev/null 2>&1
ok $? "SIGTERM during the pre-check of a 40000-run sweep: exit 130 with a reason, no run started (rc $rc: $(tr '\n' '|' <"$T/err" | head -c 160))"

"$SAMX" sweep "$T/f.yaml" seed=5 -o "$T/swk" 2>"$T/err" &
pid=$!
# children PID: the processes whose parent is PID (from /proc, no procps needed)
children() {
    local s a b c d rest
    for s in /proc/[0-9]*/stat; do
        { read -r a b c d rest <"$s"; } 2>/dev/null && [ "$d" = "$1" ] && echo "$a"
    done
}
child=""
for _ in $(seq 500); do
    child=$(children $pid | head -1)
    [ -n "$child" ] && [ -s "$(ls -d "$T"/swk/f/seed=5-*/metrics.jsonl 2>/dev/null | head -1)" ] && break
    sleep 0.01
done
[ -n "$child" ] && kill -KILL "$child"
wait $pid
rc=$?
test $rc -eq 1 && grep -q "^samx: error: .*run 'seed=5-[0-9a-f]*'.* killed by signal 9" "$T/err"
ok $? "a sweep whose run was SIGKILLed exits 1 saying so (rc $rc: $(tr '\n' '|' <"$T/err" | head -c 200))"

# --- D: a full filesystem, a read-only one ---------------------------------------------------
mkdir -p "$M"
if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=1m tmpfs "$M" 2>/dev/null; then
    run -o "$M/a" seed=2 2>/dev/null
    ok $? "a run on the small filesystem completes"
    (cd "$M/a" && sha256sum ./* ./.lock) >"$T/a.sum"
    head -c 64k /dev/zero >"$M/reserve"
    dd if=/dev/zero of="$M/filler" bs=4k 2>/dev/null
    rm "$M/reserve"
    run -o "$M/b" 2>"$T/err"
    rc=$?
    test $rc -eq 1 && one_error "$T/err" "No space left on device" && test "$(status_of "$M/b" summary.json)" != completed
    ok $? "a full filesystem: exit 1, one clear line (rc $rc: $(head -c 160 "$T/err"))"
    (cd "$M/a" && sha256sum -c --quiet "$T/a.sum")
    ok $? "the completed run beside it is intact"
    rm "$M/filler"
    run -o "$M/b" 2>"$T/err" && same_as_ref "$M/b"
    ok $? "with space back the run resumes and equals an uninterrupted one ($(head -c 160 "$T/err"))"
    mount -o remount,ro "$M"
    run -o "$M/c" 2>"$T/err"
    rc=$?
    test $rc -eq 1 && one_error "$T/err" "'$M/c.*Read-only file system"
    ok $? "a read-only results directory: exit 1, one clear line ($(head -c 160 "$T/err"))"
    "$SAMX" run "$T/f.yaml" -t 1 -o "$M/a" seed=2 2>"$T/err" && grep -q "already complete" "$T/err"
    ok $? "a completed run on it is still skipped ($(head -c 160 "$T/err"))"
    umount "$M"
else
    for w in "a full filesystem" "a run beside a full one" "a resume after space is back" "the run beside it" "a read-only filesystem" "a completed run on a read-only filesystem"; do
        skip "not root or no tmpfs mount: $w not checked"
    done
fi

tap_done
