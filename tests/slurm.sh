#!/usr/bin/env bash
# slurm.sh SAMX: `samx sweep --emit slurm` on a real Slurm (Debian's slurm-wlm): a private
# controller and node daemon on this machine (its own slurm.conf, ports and spool under a
# temporary directory, auth/none: nothing of the host's Slurm is touched), the emitted array job
# submitted with sbatch, then:
#   - every array task trains its run; samx table counts the planned runs;
#   - scancel of a running task: Slurm's SIGTERM makes samx checkpoint and mark the run
#     interrupted; resubmitting the same script resumes it, and its records and weights equal an
#     uninterrupted run's;
#   - with MPI (second argument `mpi`) and Slurm's PMIx plugin: `srun --ntasks=2 samx run`
#     trains one run over two processes, with the records of `mpirun -np 2`, and
#     `samx sweep --emit slurm --ntasks 2` emits an array job whose tasks do the same.
# Needs root (the daemons run as root) and slurmctld, slurmd, sbatch; skips otherwise.
set -u
SAMX=$(realpath "$1")
WITH_MPI=${2:-nompi}
T=$(mktemp -d /tmp/samx-slurm.XXXXXX)
. "$(dirname "$0")/tap.sh"
PIDS=
cleanup() {
    [ -n "$PIDS" ] && kill $PIDS 2>/dev/null
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

if [ "$(id -u)" != 0 ] || ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
    ! command -v sbatch >/dev/null; then
    skip "needs root and Slurm (slurm-wlm): not available here"
    tap_done
    exit
fi

# --- a private one-node cluster -----------------------------------------------------------------
H=$(hostname)
port=$((20000 + RANDOM % 20000))
mkdir -p "$T/state" "$T/spool"
cat >"$T/slurm.conf" <<EOF
ClusterName=samxtest
SlurmctldHost=$H
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
KillWait=30
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
NodeName=$H CPUs=$(nproc) State=UNKNOWN
PartitionName=samx Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$T/slurm.conf
slurmctld -D >"$T/ctld.out" 2>&1 &
PIDS="$PIDS $!"
slurmd -D >"$T/d.out" 2>&1 &
PIDS="$PIDS $!"
up=1
for _ in $(seq 100); do
    sinfo -h -o %T 2>/dev/null | grep -q idle && { up=0; break; }
    sleep 0.2
done
ok $up "a private slurmctld and slurmd come up, the node idle ($(tail -c 300 "$T/slurmctld.log" 2>/dev/null | tr '\n' ' '))"
if [ $up -ne 0 ]; then
    tap_done
    exit
fi

cd "$T" || exit 1
cat >tiny.yaml <<EOF
name: tiny
data: {name: fashion-mnist, limit_train: 512, limit_test: 128}
model: {name: mlp, hidden: [32]}
train: {epochs: 2, batch_size: 64}
optimizer: {name: sgd, lr: 0.1}
EOF

# --- an emitted array job ------------------------------------------------------------------------
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 seed=0..1 -o "$T/r" --emit slurm >job.sh 2>err
ok $? "--emit slurm writes the job script ($(head -c 200 err))"
timeout 300 sbatch --wait job.sh >sb.out 2>&1
ok $? "sbatch --wait of the 4-task array exits 0 ($(tr '\n' ' ' <sb.out | head -c 200))"
done_runs=$(grep -l '"status":[[:space:]]*"completed"' "$T"/r/tiny/*=*/summary.json 2>/dev/null | wc -l)
[ "$done_runs" -eq 4 ]
ok $? "every array task trained its run: $done_runs of 4 completed"
"$SAMX" table "$T/r/tiny" --group optimizer.lr >table.md 2>err &&
    grep -q '^| 0.05 | .* | 2 |$' table.md && grep -q '^| 0.1 | .* | 2 |$' table.md
ok $? "samx table counts 2 seeds per learning rate ($(tr '\n' ' ' <table.md | head -c 200))"

# --- scancel: SIGTERM, checkpoint, resubmit ------------------------------------------------------
cat >long.yaml <<EOF
name: long
data: {name: fashion-mnist, limit_train: 4096, limit_test: 256}
model: {name: mlp, hidden: [256, 256]}
train: {epochs: 30, batch_size: 64}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
EOF
"$SAMX" run long.yaml -o "$T/ref" -t 1 -q 2>/dev/null
"$SAMX" sweep long.yaml seed=0 -o "$T/s" --emit slurm -t 1 >long.sh 2>err
job=$(sbatch --parsable long.sh 2>err)
ok $? "sbatch of a 1-task array ($job)"
run=$(ls -d "$T"/s/long/*=*/ 2>/dev/null | head -1)
started=1
for _ in $(seq 300); do
    run=$(ls -d "$T"/s/long/*=*/ 2>/dev/null | head -1)
    [ -n "$run" ] && [ "$(cat "$run/metrics.jsonl" 2>/dev/null | wc -l)" -ge 4 ] && { started=0; break; }
    sleep 0.1
done
ok $started "the task is training (3 epochs recorded in ${run:-nothing})"
scancel "${job%%;*}"
for _ in $(seq 300); do
    squeue -h -j "${job%%;*}" 2>/dev/null | grep -q . || break
    sleep 0.1
done
grep -q '"status":[[:space:]]*"interrupted"' "$run/meta.json" 2>/dev/null &&
    ! grep -q '"status":[[:space:]]*"completed"' "$run/summary.json" 2>/dev/null
ok $? "scancel: samx checkpointed on Slurm's SIGTERM and marked the run interrupted ($(grep -o '"status":[^,]*' "$run/meta.json" 2>/dev/null))"
timeout 300 sbatch --wait long.sh >sb2.out 2>&1
ok $? "resubmitting the same script exits 0 ($(tr '\n' ' ' <sb2.out | head -c 200))"
cmp -s <(strip_timing "$run/metrics.jsonl") <(strip_timing "$T/ref/metrics.jsonl") &&
    cmp -s "$run/model.safetensors" "$T/ref/model.safetensors"
ok $? "the resumed run's records and weights equal an uninterrupted run's"

# --- srun: one run over two processes (PMIx) ------------------------------------------------------
if [ "$WITH_MPI" != mpi ] || ! command -v mpirun >/dev/null; then
skip "srun --ntasks=2: samx built without MPI, or no mpirun"
elif ! srun --mpi=list 2>&1 | grep -q pmix; then
skip "srun --ntasks=2: Slurm has no PMIx plugin here"
else
timeout 300 srun --mpi=pmix --ntasks=2 --cpus-per-task=1 "$SAMX" run tiny.yaml -t 1 -q \
    -o "$T/srun" 2>err
rc=$?
test $rc -eq 0 && [ "$(jq -r .world_size "$T/srun/meta.json")" = 2 ]
ok $? "srun --ntasks=2 samx run: exit $rc, world_size 2 in meta.json ($(head -c 200 err))"
MPIRUN=(mpirun --oversubscribe --bind-to none -np 2)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
env -u SLURM_CONF "${MPIRUN[@]}" "$SAMX" run tiny.yaml -t 1 -q -o "$T/mpirun" 2>/dev/null &&
    cmp -s <(strip_timing "$T/srun/metrics.jsonl") <(strip_timing "$T/mpirun/metrics.jsonl") &&
    cmp -s "$T/srun/model.safetensors" "$T/mpirun/model.safetensors"
ok $? "... its records and weights equal mpirun -np 2's"
# a sweep whose every array task is one run over two processes
"$SAMX" sweep tiny.yaml optimizer.lr=0.1,0.05 -o "$T/nt" -t 1 --ntasks 2 --emit slurm \
    >nt.sh 2>err && grep -q '^#SBATCH --ntasks=2$' nt.sh
ok $? "--emit slurm --ntasks 2 asks for 2 tasks per array task ($(head -c 200 err))"
timeout 300 sbatch --wait nt.sh >sb3.out 2>&1
ok $? "sbatch --wait of the 2-process array exits 0 ($(tr '\n' ' ' <sb3.out | head -c 200))"
ws=$(jq -r '"\(.world_size)"' "$T"/nt/tiny/*=*/meta.json 2>/dev/null | sort | uniq -c | tr -s ' ')
done_runs=$(grep -l '"status":[[:space:]]*"completed"' "$T"/nt/tiny/*=*/summary.json 2>/dev/null | wc -l)
[ "$done_runs" -eq 2 ] && [ "$ws" = " 2 2" ]
ok $? "both runs completed, each over 2 processes (world_size counts: $ws)"
r01=$(ls -d "$T"/nt/tiny/lr=0.1-*/ | head -1)
cmp -s <(strip_timing "$r01/metrics.jsonl") <(strip_timing "$T/mpirun/metrics.jsonl")
ok $? "... the lr 0.1 run's records equal mpirun -np 2's of the same config"
fi

tap_done
