#!/usr/bin/env bash
# Creates .venv with the Python reference implementations (torch, torchvision, timm,
# efficientnet_pytorch) used to generate and check parity fixtures. A few GB; a few minutes.
#
#   scripts/setup_reference_env.sh && .venv/bin/python scripts/make_fixtures.py
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r scripts/requirements.txt
.venv/bin/python -c "import torch, torchvision, timm, efficientnet_pytorch; print('reference env ready: torch', torch.__version__)"
