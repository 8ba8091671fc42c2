#!/usr/bin/env bash
# Make (or refresh) the virtual environment the SDK tests run in:
#   crates/gengate/tests/sdk/setup.sh <venv dir>
# Installs requirements.txt from the registry; does nothing when the venv
# already holds exactly these requirements.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$1"
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && cmp -s "$here/requirements.txt" "$stamp"; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
cp "$here/requirements.txt" "$stamp"
