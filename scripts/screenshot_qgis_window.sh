#!/usr/bin/env bash
# Real screenshots of the QGIS window with the plugin (README): QGIS under Xvfb in a fresh
# profile with the plugin enabled, driven by scripts/screenshot_qgis_window.py.
#   bash scripts/screenshot_qgis_window.sh     -> resources/screenshot_qgis_window.png, screenshot_embed_dialog.png
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
profiles="$(mktemp -d)"
trap 'rm -rf "$profiles"' EXIT
mkdir -p "$profiles/profiles/default/python/plugins" "$profiles/profiles/default/QGIS"
ln -s "$root/qgis_plugin/eoembed_qgis" "$profiles/profiles/default/python/plugins/eoembed_qgis"
printf '[PythonPlugins]\neoembed_qgis=true\n' > "$profiles/profiles/default/QGIS/QGIS3.ini"
unset PROJ_DATA PROJ_LIB
EOEMBED_PYTHON="${EOEMBED_PYTHON:-$root/.venv/bin/python}" EOEMBED_REPO="$root" EOEMBED_SHOT_DIR="$profiles" \
  timeout 300 xvfb-run -a -s "-screen 0 1600x1000x24" \
  qgis --nologo --profiles-path "$profiles" --code "$root/scripts/screenshot_qgis_window.py"
