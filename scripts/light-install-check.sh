#!/usr/bin/env bash
# A "light" install — only quinkgl-core and quinkgl-cli, no torch, no plugins — on every Python the project claims.
#
# For each interpreter a fresh venv is built in a temporary folder OUTSIDE the repository (deleted afterwards), the
# two distributions are installed from this checkout (not editable), and:
#   * `quinkgl --help`, `keygen`, `manifest create/verify/show` and `info` must work;
#   * `simulate` and `run` must fail with exit code 8 and ONE stderr line naming the `pip install` that fixes it.
# Usage: scripts/light-install-check.sh [PYTHON ...]   (default: pyenv's 3.10-3.13, or python3 without pyenv)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/quinkgl-light.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

pythons=("$@")
if [ ${#pythons[@]} -eq 0 ]; then
    if command -v pyenv >/dev/null 2>&1; then
        for minor in 3.10 3.11 3.12 3.13; do
            version="$(pyenv versions --bare | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -1 || true)"
            if [ -z "$version" ]; then
                echo "light: no pyenv Python $minor (requires-python claims it)" >&2
                exit 1
            fi
            pythons+=("$(pyenv root)/versions/$version/bin/python")
        done
    else
        pythons=("$(command -v python3)")
    fi
fi

fail() { echo "light [$PY_NAME]: $*" >&2; exit 1; }

# expect_one_line_failure CODE LOGFILE DESCRIPTION: the previous command exited CODE with one line naming pip install
expect_one_line_failure() {
    local code=$1 got=$2 log=$3 what=$4
    [ "$got" -eq "$code" ] || fail "$what exited $got, expected $code: $(cat "$log")"
    [ "$(grep -c . "$log")" -eq 1 ] || fail "$what printed more than one line on stderr: $(cat "$log")"
    grep -q "pip install" "$log" || fail "$what does not name the pip install line: $(cat "$log")"
    ! grep -q Traceback "$log" || fail "$what printed a traceback"
}

# Both distributions are pure Python: build their wheels once (one isolated hatchling build) for every venv.
wheels="$WORK/wheels"
if ! "${pythons[0]}" -m pip wheel -q --disable-pip-version-check --no-deps -w "$wheels" \
        "$ROOT/quinkgl-core" "$ROOT/quinkgl-cli" >"$WORK/wheel.log" 2>&1; then
    echo "light: building the wheels failed: $(tail -20 "$WORK/wheel.log")" >&2
    exit 1
fi

# check_one PYTHON: build the light venv for one interpreter and run every check (exits non-zero on failure).
check_one() {
    local PY=$1 start=$SECONDS
    PY_NAME="$("$PY" -c 'import platform; print(platform.python_version())')"
    local venv="$WORK/venv-$PY_NAME" pip_log="$WORK/pip-$PY_NAME.log" cases="$WORK/case-$PY_NAME" got q
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        "$wheels"/quinkgl_core-*.whl "$wheels"/quinkgl_cli-*.whl >"$pip_log" 2>&1 \
        || fail "pip install quinkgl-core quinkgl-cli failed: $(tail -20 "$pip_log")"
    ! "$venv/bin/python" -c "import torch" 2>/dev/null || fail "torch is installed in the light environment"
    q="$venv/bin/quinkgl"
    mkdir -p "$cases"
    cd "$cases"
    export QUINKGL_STATE_DIR="$cases/state"
    "$q" --help >/dev/null || fail "quinkgl --help failed"
    "$q" keygen --output creator.key >keygen.out 2>/dev/null || fail "keygen failed"
    "$q" manifest create --name light --task-type class --input-shape 1,28,28 --output-shape 10 \
        --label-type integer --model-framework pytorch --model-arch-hash "sha256:$(printf '0%.0s' {1..64})" \
        --aggregation FedAvg --topology RandomTopology --bootstrap-peer 127.0.0.1:7001 \
        --sign-with creator.key --output demo.qgl >/dev/null 2>&1 || fail "manifest create failed"
    "$q" manifest verify demo.qgl --trusted-pubkey "$(tail -1 keygen.out)" >verify.out || fail "manifest verify failed"
    grep -q "Signature: valid" verify.out || fail "manifest verify did not report a valid signature"
    "$q" manifest show demo.qgl >/dev/null || fail "manifest show failed"
    "$q" manifest show demo.qgl --json >show.json || fail "manifest show --json failed"
    "$venv/bin/python" -c "import json, sys; json.load(open(sys.argv[1]))" show.json || fail "show --json is not JSON"
    "$q" info >/dev/null || fail "info failed"
    set +e
    "$q" simulate --manifest demo.qgl --data mnist --peers 2 --rounds 1 >/dev/null 2>simulate.err
    got=$?
    set -e
    expect_one_line_failure 8 "$got" simulate.err "simulate"
    set +e
    "$q" run --manifest demo.qgl --data mnist --rounds 1 >/dev/null 2>run.err
    got=$?
    set -e
    expect_one_line_failure 8 "$got" run.err "run"
    cd "$ROOT"
    echo "light [$PY_NAME]: ok in $((SECONDS - start)) s ($(cat "$cases/run.err"))"
}

# The interpreters run side by side: the installs mostly wait on pip's index and the disk, not the CPU.
pids=()
for index in "${!pythons[@]}"; do
    (check_one "${pythons[$index]}") >"$WORK/check-$index.log" 2>&1 &
    pids+=($!)
done
status=0
for index in "${!pythons[@]}"; do
    wait "${pids[$index]}" || status=1
    cat "$WORK/check-$index.log"
done
exit $status
