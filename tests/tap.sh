# tap.sh: sourced by the shell tests (cli.sh, sweep.sh). TAP counting as tests/tap.c does it:
# ok/skip print one line each, tap_done the plan and a summary, and its status is the verdict.
n=0
fail=0
ok() { # ok COND-EXIT-STATUS NAME; NAME may quote a program's output: kept to one TAP line
    n=$((n + 1))
    local name
    name=${2//[$'\r\n\t']/ }
    if [ "$1" -eq 0 ]; then echo "ok $n - $name"; else echo "not ok $n - $name"; fail=$((fail + 1)); fi
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
tap_done() {
    echo "1..$n"
    echo "# $((n - fail)) passed, $fail failed"
    [ $fail -eq 0 ]
}
# metrics.jsonl without its timing fields (the only ones allowed to differ between runs)
strip_timing() { sed -E 's/"seconds":[^,]*,"samples_per_second":[^,]*,//; s/"measure_seconds":[^,]*,//' "$1"; }
# file $1 holds exactly one line, "samx: error: ..." matching $2
one_error() { [ "$(wc -l <"$1")" -eq 1 ] && grep -q "^samx: error: .*$2" "$1"; }
