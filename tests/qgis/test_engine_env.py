"""*Set up the engine* without the long install: which Python, which pip steps, failure and cancel.

The full install (the ZIP's wheel into a fresh venv) is test_install_zip.py; these check the
decisions around it quickly, with real interpreters and a real venv.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def test_the_qgis_program_is_never_the_base_python() -> None:
    from eoembed_qgis.engine_env import check_python, find_base_python

    qgis = shutil.which("qgis.bin") or shutil.which("qgis")
    if qgis:
        ok, why = check_python(qgis)
        assert not ok and "QGIS program" in why
    ok, why = check_python("/no/such/python3")
    assert not ok and "does not exist" in why
    base = find_base_python()
    assert Path(base).name.startswith("python") and check_python(base)[0]
    assert find_base_python(sys.executable) == sys.executable  # a chosen real Python is kept


def test_install_plan_cpu_torch_offline_and_cuda(tmp_path: Path) -> None:
    from eoembed_qgis.engine_env import TORCH_CPU_INDEX, install_plan

    wheel = tmp_path / "eoembed-0.1.0-py3-none-any.whl"
    online = install_plan("/usr/bin/python3", tmp_path / "env", wheel)
    assert [s.title.split()[0] for s in online] == ["creating", "installing", "installing", "checking"]
    assert online[1].argv[-3:] == ["torch", "--index-url", TORCH_CPU_INDEX]  # CPU PyTorch by default
    assert str(wheel) in online[2].argv and "--no-index" not in online[2].argv
    offline = install_plan("/usr/bin/python3", tmp_path / "env", wheel, find_links=str(tmp_path / "wheels"))
    assert all(TORCH_CPU_INDEX not in s.argv for s in offline)
    assert "--no-index" in offline[1].argv and str(tmp_path / "wheels") in offline[1].argv
    cuda = install_plan("/usr/bin/python3", tmp_path / "env", wheel, cuda=True)
    assert all(TORCH_CPU_INDEX not in s.argv for s in cuda)


def test_a_failed_or_cancelled_first_setup_leaves_nothing(tmp_path: Path) -> None:
    from eoembed_qgis.engine_env import SetupCanceled, SetupError, find_base_python, set_up

    base = find_base_python()
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    target = tmp_path / "env"
    log: list[str] = []
    with pytest.raises(SetupError) as err:
        set_up(base, target, tmp_path / "eoembed-0.1.0-py3-none-any.whl", log.append, find_links=str(empty))
    assert "failed" in str(err.value) and "\n" not in str(err.value)
    assert not target.exists() and any(line.startswith("$ ") for line in log)
    with pytest.raises(SetupCanceled):
        set_up(base, target, tmp_path / "x.whl", log.append, is_canceled=lambda: True, find_links=str(empty))
    assert not target.exists()
