#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with eoembed and its dependencies.
#   bash scripts/setup.sh          engine only
#   bash scripts/setup.sh --qgis   also QGIS 3 from Debian, a virtual X server, and .venv-qgis:
#                                  the system Python QGIS uses plus pytest only (no eoembed,
#                                  torch, xarray or pyarrow), where the plugin tests run
# Fast when already done: a stamp file records what was installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
want_qgis=0
[ "${1:-}" = "--qgis" ] && want_qgis=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The venv is made from the system Python so that Debian's QGIS bindings are importable in it.
py=/usr/bin/python3
if [ ! -x "$py" ] || ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "setup: installing python3 and python3-venv from Debian" >&2
  apt_install python3 python3-venv
fi
if [ "$want_qgis" = 1 ] && ! "$py" -c 'import qgis.core' 2>/dev/null; then
  echo "setup: installing QGIS from Debian (a few minutes, once)" >&2
  apt_install python3-qgis qgis-common xvfb xauth
fi
if [ "$want_qgis" = 1 ] && ! command -v qgis_process >/dev/null; then
  echo "setup: installing the QGIS desktop (qgis, qgis_process) from Debian" >&2
  apt_install qgis
fi

if [ ! -x .venv/bin/python ]; then
  "$py" -m venv --system-site-packages .venv
fi
extras="dev,stac,gee,dask"
stamp=".venv/.eoembed-installed"
want="$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -d' ' -f1) $extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing eoembed[$extras] into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # eager: Debian's old attrs and friends, visible through --system-site-packages, break rasterio.
  .venv/bin/python -m pip install -q --upgrade-strategy eager -c scripts/constraints.txt -e ".[$extras]"
  echo "$want" > "$stamp"
fi

# The plugin's tests run QGIS in the Python a user's QGIS has: the system one. A venv with
# --system-site-packages sees Debian's QGIS, numpy and GDAL bindings and adds only pytest; it
# must not see eoembed (the engine is reached through the worker, .venv/bin/python).
if [ "$want_qgis" = 1 ]; then
  qstamp=".venv-qgis/.eoembed-qgis-installed"
  qwant="pytest==9.2.0 pytest-timeout==2.4.0 pytest-qgis==5.0.2"
  [ -x .venv-qgis/bin/python ] || "$py" -m venv --system-site-packages .venv-qgis
  if [ "$(cat "$qstamp" 2>/dev/null)" != "$qwant" ]; then
    echo "setup: installing pytest into .venv-qgis (QGIS's own Python)" >&2
    # shellcheck disable=SC2086
    .venv-qgis/bin/python -m pip install -q $qwant
    echo "$qwant" > "$qstamp"
  fi
  # A folder of the engine's dependency wheels (CPU PyTorch), so the test of *Set up the engine*
  # installs offline, as a user without internet would with the plugin's "Offline wheels".
  wstamp=".venv-qgis/wheelhouse/.complete"
  if [ "$(cat "$wstamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: collecting the engine's dependency wheels into .venv-qgis/wheelhouse" >&2
    if "$py" -m pip download -q -d .venv-qgis/wheelhouse --only-binary=:all: -c scripts/constraints.txt \
        "torch==2.13.0+cpu" . >/dev/null 2>&1; then
      rm -f .venv-qgis/wheelhouse/eoembed-*
      echo "$want" > "$wstamp"
    else
      echo "setup: could not collect the wheels (no CPU PyTorch wheel here); the ZIP set-up test will skip" >&2
    fi
  fi
  if .venv-qgis/bin/python -c 'import eoembed' 2>/dev/null; then
    echo "setup: eoembed is importable in the system Python; the plugin tests need it absent" >&2
    exit 1
  fi
fi
