#!/usr/bin/env bash
# speechchat: one script for setup + the main job, and for the tests.
#   ./run.sh                 set up .venv (first time ~15 min: llama.cpp builds from source) and run configs/smoke.yaml
#   ./run.sh test [ARGS]     set up .venv with the dev extras (+ FFmpeg), lint, and run the test suite (pytest ARGS)
#   ./run.sh run ARGS        run the pipeline with your own arguments, e.g. run --config configs/en.yaml
set -euo pipefail
cd "$(dirname "$0")"

VENV="${SPEECHCHAT_VENV:-.venv}"
PY="$VENV/bin/python"

ensure_venv() {  # $1 = extras ("" or "dev")
    local extras="$1" stamp
    stamp="$VENV/.speechchat-installed-$( (cat pyproject.toml; echo "$extras") | sha256sum | cut -c1-16)"
    [ -f "$stamp" ] && return 0
    if [ ! -x "$PY" ]; then
        echo "[run.sh] creating virtualenv $VENV" >&2
        python3 -m venv "$VENV"
    fi
    "$PY" -m pip install --quiet --upgrade pip wheel
    echo "[run.sh] installing speechchat${extras:+[$extras]} (the first install builds llama.cpp from source: ~10-15 min on 2 cores)" >&2
    "$PY" -m pip install --progress-bar off -e ".${extras:+[$extras]}"
    touch "$stamp"
}

ensure_ffmpeg() {  # `datasets` decodes FLAC through torchcodec, which needs FFmpeg's shared libraries
    if ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; then return 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[run.sh] installing FFmpeg (apt-get)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
    else
        echo "[run.sh] FFmpeg's libraries are missing: install ffmpeg (e.g. sudo apt-get install ffmpeg)" >&2
        exit 1
    fi
}

ensure_chromium() {  # the report test renders report.html in headless Chromium
    if [ -x /usr/bin/chromium ]; then return 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[run.sh] installing Chromium (apt-get) for the report rendering test" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "[run.sh] Chromium is missing: install it (e.g. sudo apt-get install chromium) to run the report test" >&2
    fi
}

lint() {  # the checks CI runs before the tests: ruff (lint) and the import-layer contract (import-linter)
    echo "[run.sh] lint: ruff check, lint-imports" >&2
    "$VENV/bin/ruff" check . && "$VENV/bin/lint-imports" --no-cache >/dev/null || {
        echo "[run.sh] lint failed: see above (ruff check . ; lint-imports)" >&2; exit 1; }
}

cmd="${1:-smoke}"
case "$cmd" in
    test)
        shift
        ensure_ffmpeg
        ensure_chromium
        ensure_venv dev
        lint
        set +e
        "$PY" -m pytest "$@"
        rc=$?
        set -e
        if [ "$rc" = 5 ]; then echo "[run.sh] pytest collected no tests: failing" >&2; exit 1; fi
        exit "$rc"
        ;;
    run)
        shift
        ensure_venv ""
        exec "$PY" pipeline/main.py run "$@"
        ;;
    smoke)
        [ $# -gt 0 ] && shift
        ensure_venv ""
        exec "$PY" pipeline/main.py run --config configs/smoke.yaml "$@"
        ;;
    *)
        echo "usage: ./run.sh [test [pytest args] | run --config FILE [overrides]]" >&2
        exit 2
        ;;
esac
