#!/usr/bin/env bash
# inputs.sh SAMX [FUZZ_DIR]: everything samx reads, through the CLI, as TAP. Corrupt weight files
# (truncated, lying headers, devices), config corner cases (a million keys, strings that span
# lines), data files (empty, devices, corrupt payloads), and planning: `samx check` and
# `samx sweep --dry-run` resolve configs from file headers, never loading the data.
# Errors are one line naming the file at fault; exit 1 for data and weights, 2 for configs.
# With FUZZ_DIR (tests/fuzz), the committed crash inputs are replayed through the fuzz
# targets' replay programs (built next to SAMX as build/tests/fuzz/replay_*), if present.
set -u
SAMX=$(realpath "$1")
FUZZ=${2:+$(realpath "$2")}
SRC=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d /tmp/samx-inputs.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/tap.sh"
cd "$T" || exit 1

# expect STATUS WANT NAME -- CMD...: CMD exits STATUS within 20 s with one error line matching WANT
expect() {
    local want_rc=$1 want=$2 name=$3
    shift 4
    timeout "${LIMIT:-20}" "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    [ "$rc" -eq "$want_rc" ] && one_error "$T/err" "$want"
    ok $? "$name (exit $rc: $(head -c 240 "$T/err" | tr '\n' '|'))"
}
# le64 N: N as 8 little-endian bytes
le64() {
    local n=$1 i s=""
    for i in 0 1 2 3 4 5 6 7; do
        s="$s\\x$(printf %02x $(((n >> (8 * i)) & 255)))"
        done
    printf "$s"
}
# mkst FILE JSON DATA_BYTES: a safetensors file with that header and that many zero data bytes
mkst() {
    { le64 ${#2}; printf '%s' "$2"; head -c "$3" /dev/zero; } >"$1"
}

cat >"$T/t.yaml" <<EOF
name: t
data: {name: synthetic-linear, n_train: 64, n_test: 16, features: 8}
model: {name: mlp, hidden: [8]}
train: {epochs: 1, batch_size: 32, loss: mse}
optimizer: {name: sgd, lr: 0.01}
EOF

# --- weights: model.init_from -------------------------------------------------------------------
"$SAMX" run t.yaml -o "$T/r" -q
ok $? "a tiny run writes model.safetensors"
W="$T/r/model.safetensors"
"$SAMX" check t.yaml model.init_from="$W" >/dev/null
ok $? "check accepts the run's own weights"
"$SAMX" run t.yaml model.init_from="$W" -o "$T/r2" -q
ok $? "run starts from them"
for cut in 296 396 8 100; do
    head -c $cut "$W" >"$T/cut$cut.safetensors"
    expect 1 "'$T/cut$cut.safetensors': truncated safetensors file" \
        "check: weights cut at byte $cut are a truncated file" -- \
        "$SAMX" check t.yaml model.init_from="$T/cut$cut.safetensors"
    expect 1 "'$T/cut$cut.safetensors': truncated safetensors file" \
        "run: weights cut at byte $cut are a truncated file" -- \
        "$SAMX" run t.yaml model.init_from="$T/cut$cut.safetensors" -o "$T/rc$cut"
done
expect 1 "'/dev/zero': not a safetensors file (header length 0" \
    "init_from=/dev/zero: a bounded read and an error, not memory exhaustion" -- \
    "$SAMX" run t.yaml model.init_from=/dev/zero -o "$T/rz"
{ le64 200000000; } >"$T/huge.safetensors"
expect 1 "'$T/huge.safetensors': not a safetensors file (header length 200000000" \
    "a header length over 100 MiB is refused before reading it" -- \
    "$SAMX" check t.yaml model.init_from="$T/huge.safetensors"
{ cat "$W"; printf 'x'; } >"$T/trail.safetensors"
expect 1 "'$T/trail.safetensors': corrupt safetensors file" "bytes after the tensor data" -- \
    "$SAMX" run t.yaml model.init_from="$T/trail.safetensors" -o "$T/rt"
F32='"dtype":"F32"'
bad_header() { # NAME JSON DATA_BYTES WANT
    mkst "$T/h.safetensors" "$2" "$3"
    expect 1 "'$T/h.safetensors': $4" "header field: $1" -- \
        "$SAMX" run t.yaml model.init_from="$T/h.safetensors" -o "$T/rh"
}
bad_header "shape with a string" "{\"a\":{$F32,\"shape\":[\"x\"],\"data_offsets\":[0,4]}}" 4 \
    "tensor 'a' has a size in its shape that is not a non-negative integer"
bad_header "negative size" "{\"a\":{$F32,\"shape\":[-1],\"data_offsets\":[0,4]}}" 4 \
    "tensor 'a' has a size in its shape"
bad_header "fractional offset" "{\"a\":{$F32,\"shape\":[1],\"data_offsets\":[0.5,4.5]}}" 5 \
    "tensor 'a' has data_offsets that are not integers"
bad_header "offset 1e300" "{\"a\":{$F32,\"shape\":[1],\"data_offsets\":[1e300,1e300]}}" 4 \
    "tensor 'a' has data_offsets that are not integers"
bad_header "huge shape" "{\"a\":{$F32,\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}" 4 \
    "tensor 'a' has a shape too large"
bad_header "unknown dtype" "{\"a\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,4]}}" 4 \
    "tensor 'a' has no known dtype"
bad_header "entry not an object" "{\"a\":3}" 0 "tensor 'a' is not an object"
bad_header "size not matching the shape" "{\"a\":{$F32,\"shape\":[2],\"data_offsets\":[0,4]}}" 4 \
    "tensor 'a' has data_offsets not matching"
bad_header "overlap" "{\"a\":{$F32,\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{$F32,\"shape\":[1],\"data_offsets\":[4,8]}}" 8 \
    "tensor 'b' overlaps another tensor's bytes"
bad_header "hole" "{\"a\":{$F32,\"shape\":[1],\"data_offsets\":[4,8]}}" 8 \
    "tensor 'a' leaves a hole before its bytes"
bad_header "a name twice" "{\"a\":{$F32,\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{$F32,\"shape\":[1],\"data_offsets\":[4,8]}}" 8 \
    "tensor 'a' is listed twice"
bad_header "metadata not strings" "{\"__metadata__\":{\"k\":1}}" 0 \
    "__metadata__ must be one object of strings"
bad_header "not JSON" "{\"a\":" 0 "not a safetensors file (the header is not a JSON object)"
bad_header "a name with a newline stays one line" "{\"a\\nb\":3}" 0 "tensor 'a.nb' is not an object"

# --- configs ------------------------------------------------------------------------------------
{
    echo "name: big"
    seq 1 1000000 | sed 's/^/k/; s/$/: 1/'
} >"$T/keys.yaml"
# CPU seconds, not wall time (the machine may be loaded); quadratic, it took over 120 s
TIMEFORMAT='%U %S'
{ time timeout 600 "$SAMX" check "$T/keys.yaml" >/dev/null 2>"$T/err"; rc=$?; } 2>"$T/cpu"
cpu=$(awk '{printf "%d", $1 + $2}' "$T/cpu")
[ "$rc" -eq 2 ] && one_error "$T/err" "keys.yaml:2:1: unknown key 'k1'" && [ "$cpu" -lt 30 ]
ok $? "a config of 10^6 keys: checked in linear time ($cpu CPU s, exit $rc: $(head -c 200 "$T/err"))"
{
    echo "name: dup"
    seq 1 200000 | sed 's/^/k/; s/$/: 1/'
    echo "k77: 2"
} >"$T/dup.yaml"
expect 2 "dup.yaml:200002:1: duplicate key 'k77'" "a duplicate among 200000 keys is found" -- \
    "$SAMX" check "$T/dup.yaml"
printf 'name: s\ntrain: {epochs: "ten\n\n  days"}\n' >"$T/ml.yaml"
expect 2 "ml.yaml:2:17: 'train.epochs' must be an integer, got the string 'ten\\\\ndays'" \
    "an error quoting a string that spans lines is one line" -- "$SAMX" check "$T/ml.yaml"
expect 2 "override 'train.loss=\"a\\\\nb\"'" "an override with a newline: one line" -- \
    "$SAMX" check t.yaml 'train.loss="a\nb"'
printf 'name: k\n"%s": 1\n' "$(head -c 300 /dev/zero | tr '\0' k)" >"$T/longkey.yaml"
expect 2 "longkey.yaml:2:1: key longer than 200 bytes" \
    "a key of 300 bytes is an error (its dump would not load back)" -- "$SAMX" check "$T/longkey.yaml"

# --- data files ---------------------------------------------------------------------------------
# IDX: a header saying n images of r x c, then the payload
idx_images() { # FILE N R C [PIXEL_SOURCE]
    { printf '\x00\x00\x08\x03'; for v in $2 $3 $4; do printf "\\x$(printf %02x $((v >> 24 & 255)))\\x$(printf %02x $((v >> 16 & 255)))\\x$(printf %02x $((v >> 8 & 255)))\\x$(printf %02x $((v & 255)))"; done
      head -c $(($2 * $3 * $4)) "${5:-/dev/zero}"; } >"$1"
}
idx_labels() { # FILE N [BYTE]
    { printf '\x00\x00\x08\x01'; v=$2; printf "\\x$(printf %02x $((v >> 24 & 255)))\\x$(printf %02x $((v >> 16 & 255)))\\x$(printf %02x $((v >> 8 & 255)))\\x$(printf %02x $((v & 255)))"
      head -c "$2" /dev/zero | tr '\0' "\\$(printf %03o "${3:-0}")"; } >"$1"
}
mk_idx() { # DIR NTRAIN NTEST [TRAIN_LABEL_BYTE]
    mkdir -p "$1"
    idx_images "$1/train-images-idx3-ubyte" "$2" 28 28
    idx_labels "$1/train-labels-idx1-ubyte" "$2" "${4:-0}"
    idx_images "$1/t10k-images-idx3-ubyte" "$3" 28 28
    idx_labels "$1/t10k-labels-idx1-ubyte" "$3"
}
cat >"$T/m.yaml" <<EOF
name: m
data: {name: mnist, dir: $T/idx}
model: {name: mlp, hidden: [8]}
train: {epochs: 1, batch_size: 8}
optimizer: {name: sgd, lr: 0.01}
EOF
mk_idx "$T/idx" 16 8
"$SAMX" run m.yaml -o "$T/rm" -q
ok $? "a run over small IDX files"
"$SAMX" check m.yaml >"$T/checked"
cmp -s "$T/checked" "$T/rm/config.yaml"
ok $? "check's resolved config is the run's config.yaml, byte for byte"
mk_idx "$T/idx0" 0 8
expect 1 "'$T/idx0/train-images-idx3-ubyte': holds no images" \
    "an IDX file of 0 images: the error names the data file, not the config" -- \
    "$SAMX" check m.yaml data.dir="$T/idx0"
: >"$T/idx0/train-images-idx3-ubyte"
expect 1 "'$T/idx0/train-images-idx3-ubyte': truncated: expected at least 16 bytes, got 0" \
    "an empty IDX file names it" -- "$SAMX" run m.yaml data.dir="$T/idx0" -o "$T/r0"
mk_idx "$T/idxbad" 16 8 12
"$SAMX" check m.yaml data.dir="$T/idxbad" >/dev/null
ok $? "check reads headers only: a label out of range passes check"
expect 1 "'$T/idxbad/train-labels-idx1-ubyte': label 12 of example 0 is not in \[0, 10)" \
    "... and is an error at run time, naming the file" -- \
    "$SAMX" run m.yaml data.dir="$T/idxbad" -o "$T/rb"
mk_idx "$T/idxshort" 16 8
head -c 1000 "$T/idx/train-images-idx3-ubyte" >"$T/idxshort/train-images-idx3-ubyte"
expect 1 "'$T/idxshort/train-images-idx3-ubyte': truncated: expected 12560 bytes, got 1000" \
    "check compares a plain IDX file's size with its header" -- \
    "$SAMX" check m.yaml data.dir="$T/idxshort"
mkdir -p "$T/idxgz" && cp "$T"/idx/* "$T/idxgz/"
idx_images "$T/idxgz/train-images-idx3-ubyte" 400 28 28 /dev/urandom # over gzip's buffer
idx_labels "$T/idxgz/train-labels-idx1-ubyte" 400
gzip "$T/idxgz/train-images-idx3-ubyte"
gzf="$T/idxgz/train-images-idx3-ubyte.gz" # its CRC and size trailer overwritten
{ head -c $(($(stat -c %s "$gzf") - 8)) "$gzf"; printf 'XXXXXXXX'; } >"$T/x" && mv "$T/x" "$gzf"
"$SAMX" check m.yaml data.dir="$T/idxgz" >/dev/null
ok $? "check reads a gzip IDX header without checking its payload"
expect 1 "'$T/idxgz/train-images-idx3-ubyte.gz': corrupt gzip data" \
    "... a run reads the payload and names the file" -- \
    "$SAMX" run m.yaml data.dir="$T/idxgz" -o "$T/rg"
sed 's/data: .*/data: {name: csv, train: dev, task: regression}/' t.yaml >"$T/c.yaml"
expect 1 "cannot read '/dev/zero': not a regular file" "a CSV data file that is a device" -- \
    "$SAMX" check c.yaml data.train=/dev/zero
printf 'a,b,y\n' >"$T/empty.csv"
expect 1 "'$T/empty.csv': no data rows" "a CSV of a header only names the file" -- \
    "$SAMX" check c.yaml data.train="$T/empty.csv" data.label=y

# --- planning: no data loaded, no weights allocated -----------------------------------------------
timeout 20 "$SAMX" check t.yaml data.n_train=2000000000 data.features=100000 >/dev/null
ok $? "check of a 2e9 x 1e5 synthetic data set neither draws nor allocates it"
timeout 20 "$SAMX" check t.yaml model.hidden=[1000000,1000000] >/dev/null
ok $? "check of a 10^12-parameter MLP allocates no weights"
sed 's/model: .*/model: {name: resnet}/; s/loss: mse/loss: cross_entropy/' m.yaml >"$T/rn.yaml"
timeout 20 "$SAMX" check rn.yaml model.depth=170 model.width=1024 >/dev/null
ok $? "check of a ResNet-170 of width 1024 allocates no workspace"
expect 2 "'model.depth' must be 18 or 6n+2 up to 170" \
    "ResNet-1202 (more tensors than samx holds) is a config error, not an assertion" -- \
    "$SAMX" check rn.yaml model.depth=1202
mkdir -p "$T/sw" && cd "$T/sw" || exit 1
start=$(date +%s%N)
timeout 60 "$SAMX" sweep "$SRC/configs/quickstart.yaml" seed=0..99 --dry-run >"$T/dry"
ok $? "sweep --dry-run of 100 Fashion-MNIST runs"
echo "# 100-run --dry-run: $((($(date +%s%N) - start) / 1000000)) ms"
test "$(wc -l <"$T/dry")" -eq 100
ok $? "... lists 100 commands"
cd "$T" || exit 1

# --- results files: records, summaries and manifests that samx table and plot read ---------------
"$SAMX" sweep t.yaml seed=0,1 -o "$T/tw" -q 2>/dev/null
"$SAMX" table "$T/tw" --metric test_loss >/dev/null
ok $? "a two-run sweep to table"
# damaged WHAT EDIT WANT [TABLE_OPTIONS]: table (and, for records, plot) on a copy of the sweep
# with EDIT applied (a sed -i script on the file WHAT, a glob under the copy) exit 1 naming it
damaged() {
    local what=$1 edit=$2 want=$3
    shift 3
    rm -rf "$T/dw" && cp -a "$T/tw" "$T/dw"
    sed -i "$edit" "$T"/dw/$what
    expect 1 "$want" "table on a damaged $what ($edit)" -- \
        "$SAMX" table "$T/dw" --metric test_loss "$@"
}
damaged "t/seed=0-*/summary.json" 's/"test_loss":\t[0-9.e-]*/"test_loss": "x"/' \
    "/summary.json (final record): 'test_loss' is not a number"
damaged "t/seed=0-*/metrics.jsonl" '2s/"test_loss":[0-9.e-]*/"test_loss":"abc"/' \
    "/metrics.jsonl:2: 'test_loss' is not a number" --at best:test_loss
damaged "t/seed=0-*/metrics.jsonl" '2s/"epoch":1/"epoch":-5/' \
    "/metrics.jsonl:2: epoch -5 is not a non-negative integer" --at best:test_loss
expect 1 "/metrics.jsonl:2: epoch -5 is not a non-negative integer" \
    "plot on a record with a negative epoch" -- \
    "$SAMX" plot "$T/dw" --y test_loss -o "$T/p.txt"
damaged "t/seed=1-*/metrics.jsonl" '1s/^/\x00/' "/metrics.jsonl' holds a NUL byte" --at best:test_loss
damaged "t/sweeps/*/manifest.jsonl" '1s/"run_id":"[^"]*"/"run_id":"..\/..\/etc"/' \
    "/manifest.jsonl:1: its run_id is not the name of a run directory"
damaged "t/sweeps/*/manifest.jsonl" '2s/"overrides":\[[^]]*\]/"overrides":[7]/' \
    "/manifest.jsonl:2: its overrides are not a list of strings"
damaged "t/sweeps/*/manifest.jsonl" '2s/"config":"[^"]*"/"config":{}/' \
    "/manifest.jsonl:2: its config is not a string"
damaged "t/sweeps/*/manifest.jsonl" '$a {"run_id":' \
    "/manifest.jsonl:3: not a JSON object (a corrupt or truncated line)"

# --- fuzz regressions: every committed crash input replayed --------------------------------------
# Output that cannot be written (a full disk) fails the command with the reason, never exit 0
if [ -w /dev/full ]; then
    "$SAMX" check "$T/t.yaml" -q >/dev/full 2>"$T/err"
    test $? -eq 1 && one_error "$T/err" "cannot write the output: No space left on device"
    ok $? "check > /dev/full: exit 1, the reason in one line ($(cat "$T/err"))"
else
    skip "no /dev/full"
fi

if [ -n "$FUZZ" ]; then
    bin=$(dirname "$SAMX")/../tests/fuzz
    for dir in "$FUZZ"/regressions/*/; do
        [ -d "$dir" ] || continue
        target=$(basename "$dir")
        if [ ! -x "$bin/replay_$target" ]; then
            skip "replay_$target not built"
            continue
        fi
        for f in "$dir"*; do
            timeout 20 "$bin/replay_$target" "$f" >/dev/null 2>"$T/err"
            ok $? "fuzz regression $target/$(basename "$f") replays without a crash"
        done
    done
fi
tap_done
