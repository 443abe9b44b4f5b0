#!/usr/bin/env bash
# Every test: the Rust suites (`cargo test`), then the Python package (python/) built by
# maturin, installed into a virtual environment under target/ and tested with pytest against
# the command line built beside it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test

venv=target/python-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# The dev profile, as `cargo test` built the engine: the package reuses its build.
MATURIN_PEP517_ARGS="--profile dev" "$venv/bin/pip" install --quiet --disable-pip-version-check "./python[test]"
BILEVEL_BIN="$PWD/target/debug/bilevel" "$venv/bin/python" -m pytest -q python/tests
