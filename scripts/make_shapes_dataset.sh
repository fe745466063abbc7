#!/usr/bin/env bash
# Writes the synthetic shapes dataset (scripts/make_shapes_dataset.py) with Pillow, which this
# script installs from PyPI into .venv-shapes/ when the system Python lacks it.
#   scripts/make_shapes_dataset.sh data/shapes [--per-class 60] [--size 64]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python=python3
if ! python3 -c "import PIL" 2>/dev/null; then
    venv="$here/../.venv-shapes"
    if ! "$venv/bin/python" -c "import PIL" 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "pillow>=10,<13"
    fi
    python="$venv/bin/python"
fi
exec "$python" "$here/make_shapes_dataset.py" "$@"
