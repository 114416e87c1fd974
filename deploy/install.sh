#!/bin/sh
# Installs the imocha_pipeline code location into its own virtual environment: the install steps of the
# Dockerfile, kept in one script so CI runs exactly what the image runs
# (imocha_pipeline_tests/test_deploy.py runs it into a fresh venv).
#
#   deploy/install.sh [SOURCE_DIR]          SOURCE_DIR: the project (default: this script's parent folder)
#
# Settings: IMOCHA_PIPELINE_VENV   where the virtual environment goes (default /opt/venv)
#           IMOCHA_PIPELINE_EXTRAS extras to install (default k8s: dagster-k8s for the K8sRunLauncher; empty: none)
#           PYTHON                 the interpreter to build the venv with (default python3, 3.11 or newer)
set -eu

SOURCE_DIR="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
VENV="${IMOCHA_PIPELINE_VENV:-/opt/venv}"
EXTRAS="${IMOCHA_PIPELINE_EXTRAS-k8s}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "imocha_pipeline needs Python 3.11 or newer")'
"$PYTHON" -m venv "$VENV"
# A regular (not editable) install: the image holds the built package, not a link to the source folder.
if [ -n "$EXTRAS" ]; then
  TARGET="${SOURCE_DIR}[${EXTRAS}]"
else
  TARGET="${SOURCE_DIR}"
fi
"$VENV/bin/python" -m pip install --quiet --no-input --disable-pip-version-check "$TARGET"

# The code location must load with nothing but the installed package (no settings needed to load it).
"$VENV/bin/python" - <<'PY'
import imocha_pipeline.definitions as location

names = sorted(job.name for job in location.defs.resolve_all_job_defs() if not job.name.startswith("__"))
print("imocha_pipeline installed: jobs " + ", ".join(names))
PY
