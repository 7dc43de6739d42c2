#!/usr/bin/env bash
# team.sh SAMX: neither the thread count (-t) nor the team size (how many threads run each
# parallel region, tune.h) changes a result. Against a -t 1 run, runs at -t 2 and -t 3 with the
# team pinned to each size, and ones whose team changes at every step (SAMX_TEAM=cycle), must
# give byte-identical records (timing aside) and weights: the MLP's row-split passes, a
# BatchNorm CNN, a ResNet, SAM and CR-SAM. Another BLAS core must not (the check can fail). Also: the wait policy
# and the team are recorded, a user's OMP_WAIT_POLICY is kept, and the adaptive controller gives
# the same bits as a pinned team on a busy machine (a background busy loop).
set -u
SAMX=$(realpath "$1")
T=$(mktemp -d /tmp/samx-team.XXXXXX)
BG=
trap '[ -n "$BG" ] && kill $BG 2>/dev/null; rm -rf "$T"' EXIT
. "$(dirname "$0")/tap.sh"

# Tiny CIFAR-format files (label byte + 3072 pixels), 240 training and 64 test images.
mkdir -p "$T/cifar"
python3 - "$T/cifar" <<'PY'
import random, sys
r = random.Random(0)
for f, n in [("data_batch_%d.bin" % i, 48) for i in range(1, 6)] + [("test_batch.bin", 64)]:
    with open(f"{sys.argv[1]}/{f}", "wb") as o:
        for _ in range(n):
            o.write(bytes([r.randrange(10)]) + bytes(r.randrange(256) for _ in range(3072)))
PY

cfg() { # cfg NAME DATA MODEL OPTIMIZER
    cat >"$T/$1.yaml" <<EOF
name: $1
seed: 1
data: $2
model: $3
train: {epochs: 2, batch_size: 64}
optimizer: $4
EOF
}
FM='{name: fashion-mnist, limit_train: 1024, limit_test: 256}'
SGD='{name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4}'
cfg mlp "$FM" '{name: mlp, hidden: [256, 128]}' "$SGD"
cfg mlp-sam "$FM" '{name: mlp, hidden: [256, 128], activation: gelu}' "{name: sam, rho: 0.05, m: 16, base: $SGD}"
cfg mlp-crsam "$FM" '{name: mlp, hidden: [256, 128]}' "{name: crsam, rho: 0.1, gamma: 0.1, beta: 0.01, base: $SGD}"
cfg cnn "$FM" '{name: cnn, channels: [8, 16]}' "{name: sam, rho: 0.05, base: $SGD}"
cfg resnet "{name: cifar10, dir: $T/cifar}" '{name: resnet, depth: 8, width: 8}' "$SGD"

same() { # same DIR-A DIR-B: records (timing aside) and weights identical
    cmp -s <(strip_timing "$1/metrics.jsonl") <(strip_timing "$2/metrics.jsonl") &&
        cmp -s "$1/model.safetensors" "$2/model.safetensors"
}
for c in mlp mlp-sam mlp-crsam cnn resnet; do
    "$SAMX" run "$T/$c.yaml" -o "$T/$c-1" -t 1 -q --force
    ok $? "$c -t 1: runs"
    for t in 2 3; do
        teams="$t 1 cycle"
        [ $t -gt 2 ] && teams="$t 1 $((t - 1)) cycle"
        for team in $teams; do
            SAMX_TEAM=$team "$SAMX" run "$T/$c.yaml" -o "$T/$c-$t-$team" -t $t -q --force
            same "$T/$c-1" "$T/$c-$t-$team"
            ok $? "$c -t $t, team $team: the records and weights of -t 1"
        done
    done
done
OPENBLAS_CORETYPE=Prescott "$SAMX" run "$T/mlp.yaml" -o "$T/mlp-prescott" -t 2 -q --force
! same "$T/mlp-1" "$T/mlp-prescott"
ok $? "mlp with another BLAS core (Prescott) differs in its last bits (the checks above can fail)"

grep -q '"omp_team":[[:space:]]*"cycle (SAMX_TEAM)"' "$T/mlp-2-cycle/meta.json"
ok $? "meta.json records the team policy"
env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$SAMX" run "$T/mlp.yaml" -o "$T/wait" -t 2 -q --force &&
    grep -q '"omp_wait_policy":[[:space:]]*"GOMP_SPINCOUNT=[0-9]* (samx)"' "$T/wait/meta.json"
ok $? "samx sets a short spin before threads sleep, and records it"
env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=active "$SAMX" run "$T/mlp.yaml" -o "$T/wait" -t 2 -q --force &&
    grep -q '"omp_wait_policy":[[:space:]]*"OMP_WAIT_POLICY=active (user)"' "$T/wait/meta.json"
ok $? "a user's OMP_WAIT_POLICY is kept"

# The adaptive controller under load: the busy loop makes it try (and maybe keep) a smaller
# team; whatever it chose, the bits are the pinned full team's.
setsid sh -c 'while :; do :; done' &
BG=$!
cat >"$T/long.yaml" <<EOF
name: long
seed: 1
data: {name: fashion-mnist, limit_train: 12800, limit_test: 256}
model: {name: mlp, hidden: [256, 128]}
train: {epochs: 1, batch_size: 32}
optimizer: $SGD
EOF
"$SAMX" run "$T/long.yaml" -o "$T/long-adaptive" -t 2 -q --force
kill $BG
BG=
SAMX_TEAM=2 "$SAMX" run "$T/long.yaml" -o "$T/long-pinned" -t 2 -q --force
same "$T/long-adaptive" "$T/long-pinned"
ok $? "the adaptive team on a busy machine gives the pinned team's records and weights"
tap_done
