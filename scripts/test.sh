#!/usr/bin/env bash
# Run the test suite: set up the environment (fast when already done), then pytest.
# Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -x tests/test_config.py
#   bash scripts/test.sh -k scd2 -vv
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "test: .venv/bin/python -m pytest -q $*"
exec .venv/bin/python -m pytest -q "$@"
