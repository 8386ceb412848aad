#!/usr/bin/env bash
# Create bench/.venv-old with the published pyai-caching 0.4.1 for `python bench/bench.py --compare`.
# It shares the import name `pyai_caching` with this repo, so it must live in its own venv.
# pyai-caching 0.4.1 leaves pydantic-ai unpinned (which resolves to an ancient release), so the
# same pydantic-ai-slim as the main venv is installed first and the old package with --no-deps.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m venv .venv-old
.venv-old/bin/pip install --quiet --upgrade pip
.venv-old/bin/pip install --quiet "pydantic-ai-slim==2.68.0" redis
.venv-old/bin/pip install --quiet --no-deps "pyai-caching==0.4.1"
.venv-old/bin/python -c "import importlib.metadata as m; print('pyai-caching', m.version('pyai-caching'), '/ pydantic-ai-slim', m.version('pydantic-ai-slim'))"
