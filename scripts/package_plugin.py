"""Build dist/eoembed_qgis-<version>.zip: the plugin folder plus the engine wheel (see package_plugin)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "qgis_plugin" / "eoembed_qgis"
SKIP = {"__pycache__", ".pytest_cache", "wheels"}


def engine_version() -> str:
    """The engine's version from pyproject.toml (the plugin carries the same one)."""
    m = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    if not m:
        raise SystemExit("package_plugin: no version in pyproject.toml")
    return m.group(1)


def build_wheel(out: Path) -> Path:
    """The engine wheel, built from this checkout without network (setuptools of this Python)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", tmp, str(REPO)], check=True)
        (wheel,) = Path(tmp).glob("eoembed-*.whl")
        return Path(shutil.copy2(wheel, out / wheel.name))


def main(argv: list[str]) -> int:
    dist = Path(argv[1]) if len(argv) > 1 else REPO / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    version = engine_version()
    meta = (PLUGIN / "metadata.txt").read_text()
    if not re.search(rf"^version={re.escape(version)}$", meta, re.M):
        raise SystemExit(f"package_plugin: metadata.txt version differs from pyproject.toml's {version}")
    target = dist / f"eoembed_qgis-{version}.zip"
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        part = target.with_name(target.name + ".part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(PLUGIN.rglob("*")):
                rel = path.relative_to(PLUGIN)
                if path.is_dir() or SKIP & set(rel.parts) or path.suffix in (".pyc", ".pyo"):
                    continue
                zf.write(path, f"eoembed_qgis/{rel.as_posix()}")
            zf.write(wheel, f"eoembed_qgis/wheels/{wheel.name}")
        part.replace(target)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
