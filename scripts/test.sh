#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh machine, then runs pytest.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
# the optional Ray engine: its tests (tests/test_ray.py) fail rather than skip under CI when ray is missing
python -m pip install --quiet --disable-pip-version-check -r requirements-ray.txt
# the package itself, editable: tests import it as an installed user does, from any folder
python -m pip install --quiet --disable-pip-version-check --no-deps -e .

# The browser test drives Debian's Chromium (Playwright cannot download browsers here).
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
command -v chromium >/dev/null 2>&1 || { echo "chromium is missing: the browser test cannot run" >&2; exit 1; }

# The house by layer (.importlinter): an upward import or an import circle fails here, with its line.
lint-imports --no-logo
exec python -m pytest "$@"
