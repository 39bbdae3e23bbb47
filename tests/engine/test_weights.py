"""Checkpoint resolution (local, Hub cache, mirror, offline) and safe loading."""

from __future__ import annotations

import argparse
import builtins
import hashlib
import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from eoembed.errors import WeightsError
from eoembed.weights import (
    SAFE_DATA_CLASSES,
    extract_state_dict,
    file_sha256,
    load_checkpoint,
    load_into,
    resolve,
)
from safetensors.torch import save_file

REPO = "someone/some-model"
FILE = "models/nano/encoder.pt"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def offline_empty_hub(tmp_path, monkeypatch):
    """An empty Hugging Face home, offline, no mirror: nothing may touch the network."""
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "EOEMBED_WEIGHTS_DIR",
                "EOEMBED_HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return home


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_resolve_local_file_folder_and_companion(tmp_path):
    enc = _write(tmp_path / "w" / "encoder.pt", b"enc")
    cfg = _write(tmp_path / "w" / "config.json", b"{}")
    assert resolve(enc) == enc
    assert resolve(str(enc), "encoder.pt") == enc
    assert resolve(enc, "config.json") == cfg  # companion beside the given file
    assert resolve(tmp_path / "w", "config.json") == cfg
    with pytest.raises(WeightsError, match="has no 'missing.bin'"):
        resolve(tmp_path / "w", "missing.bin")
    with pytest.raises(WeightsError, match="neither an existing file or folder"):
        resolve(tmp_path / "nope.pt")


def test_resolve_hf_offline_without_cache_names_repo_file_and_destination(offline_empty_hub):
    with pytest.raises(WeightsError) as info:
        resolve(f"hf:{REPO}", FILE)
    message = str(info.value)
    assert REPO in message and FILE in message
    assert "HF_HUB_OFFLINE" in message
    assert f"$EOEMBED_WEIGHTS_DIR/{REPO}/{FILE}" in message
    assert "local path" in message


def test_resolve_hf_from_warm_cache_offline(offline_empty_hub):
    repo_dir = offline_empty_hub / "hub" / f"models--{REPO.replace('/', '--')}"
    target = _write(repo_dir / "snapshots" / COMMIT / FILE, b"weights")
    _write(repo_dir / "refs" / "main", COMMIT.encode())
    got = resolve(f"hf:{REPO}", FILE)
    assert got.read_bytes() == b"weights"
    assert got.resolve() == target.resolve()
    # a pinned revision resolves to the same snapshot
    assert resolve(f"hf:{REPO}@{COMMIT}", FILE).read_bytes() == b"weights"


def test_resolve_hf_prefers_eoembed_weights_dir(offline_empty_hub, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    target = _write(mirror / REPO / FILE, b"mirrored")
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(mirror))
    assert resolve(f"hf:{REPO}", FILE) == target
    with pytest.raises(WeightsError, match=str(mirror / REPO / "other.pt")):
        resolve(f"hf:{REPO}", "other.pt")


@pytest.mark.parametrize("bad", ["hf:noslash", "hf:owner/repo@", "hf:/repo"])
def test_resolve_rejects_malformed_hf_source(bad, offline_empty_hub):
    with pytest.raises(WeightsError, match="is not of the form"):
        resolve(bad, "x.pt")


def test_sha256_verified(tmp_path):
    path = _write(tmp_path / "a.bin", b"abc" * 1000)
    digest = hashlib.sha256(b"abc" * 1000).hexdigest()
    assert file_sha256(path) == digest
    assert resolve(path, sha256=digest.upper()) == path
    with pytest.raises(WeightsError, match="SHA-256"):
        resolve(path, sha256="0" * 64)


def test_safetensors_roundtrip(tmp_path):
    tensors = {"a.weight": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert set(loaded) == set(tensors)
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value)


def test_namespace_pickle_needs_explicit_allow(tmp_path):
    path = tmp_path / "ns.pth"
    torch.save({"args": argparse.Namespace(lr=0.1, name="x"),
                "model": {"w": torch.ones(2, 2)}}, path)
    with pytest.raises(WeightsError, match=r"argparse\.Namespace"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, allow=["argparse.Namespace"])
    assert loaded["args"] == argparse.Namespace(lr=0.1, name="x")
    assert torch.equal(extract_state_dict(loaded)["w"], torch.ones(2, 2))


class _Payload:
    """Pickles into a call of os.system: what a malicious checkpoint looks like."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("allow", [(), ("argparse.Namespace",)])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, allow):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "x": _Payload(f"touch {marker}")}, path)
    with pytest.raises(WeightsError, match="system"):
        load_checkpoint(path, allow=allow)
    assert not marker.exists()


def test_allow_list_never_admits_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"x": _Payload(f"touch {marker}")}, path)
    with pytest.raises(WeightsError, match="never admitted"):
        load_checkpoint(path, allow=[f"{os.system.__module__}.system"])
    assert not marker.exists()


def test_corrupt_file_is_a_weights_error(tmp_path):
    path = _write(tmp_path / "junk.pt", b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="could not be read"):
        load_checkpoint(path)


def test_extract_state_dict_container_and_prefix():
    inner = {"encoder.a": torch.zeros(1), "encoder.b.c": torch.ones(2), "decoder.a": torch.ones(3),
             "step": 7}
    got = extract_state_dict({"state_dict": inner, "epoch": 3}, prefixes=["encoder."])
    assert set(got) == {"a", "b.c"}
    assert torch.equal(got["b.c"], torch.ones(2))
    assert set(extract_state_dict({"model": inner})) == {"encoder.a", "encoder.b.c", "decoder.a"}
    with pytest.raises(WeightsError, match="no tensors under the prefixes"):
        extract_state_dict(inner, prefixes=["backbone."])


def test_load_into_names_missing_unexpected_and_shape_mismatch():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    good = {k: torch.full_like(v, 0.5) for k, v in net.state_dict().items()}
    load_into(net, good)
    assert torch.all(net[0].weight == 0.5)

    bad = dict(good)
    del bad["1.bias"]
    bad["extra.weight"] = torch.zeros(1)
    bad["0.weight"] = torch.zeros(3, 5)
    with pytest.raises(WeightsError) as info:
        load_into(net, bad, what="tiny net")
    message = str(info.value)
    assert "tiny net" in message
    assert "missing 1.bias" in message
    assert "unexpected extra.weight" in message
    assert "0.weight: checkpoint (3, 5) vs model (3, 4)" in message

    # non-strict tolerates missing/unexpected but never a shape mismatch
    del bad["0.weight"]
    load_into(net, bad, strict=False)
    bad["0.weight"] = torch.zeros(2, 2)
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_into(net, bad, strict=False)


class _Call:
    """Pickles into a call of any function: the payloads of a hostile checkpoint."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _payloads(marker):
    return {
        "io.open": _Call(io.open, str(marker), "w"),
        "os.system": _Call(os.system, f"touch {marker}"),
        "builtins.eval": _Call(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "builtins.exec": _Call(builtins.exec, f"open({str(marker)!r}, 'w')"),
        "subprocess.call": _Call(subprocess.call, ["touch", str(marker)]),
    }


@pytest.mark.parametrize("name", ["io.open", "os.system", "builtins.eval", "builtins.exec", "subprocess.call"])
@pytest.mark.parametrize("how", ["refused", "allowed by name", "allowed by its own module"])
def test_no_callable_can_be_talked_into_the_unpickler(tmp_path, name, how):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[name]
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "x": payload}, path)
    fn = payload.fn
    allow = {"refused": [], "allowed by name": [name],
             "allowed by its own module": [f"{fn.__module__}.{fn.__qualname__}"]}[how]
    with pytest.raises(WeightsError) as err:
        load_checkpoint(path, allow=allow)
    msg = str(err.value)
    assert not marker.exists()
    assert "allow" not in msg.replace("Allow-list entry", "") and "weights_only" not in msg
    assert "\n" not in msg and ("never admitted" in msg if allow else "refused" in msg)


def test_only_known_plain_data_classes_can_be_allowed():
    assert "argparse.Namespace" in SAFE_DATA_CLASSES
    for name in ("collections.Counter", "functools.partial", "torch.nn.Linear", "pathlib.Path"):
        with pytest.raises(WeightsError, match="never admitted"):
            load_checkpoint(__file__, allow=[name])


def test_random_bytes_are_refused_without_torchs_unsafe_hint(tmp_path):
    path = _write(tmp_path / "noise.pt", bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)))
    with pytest.raises(WeightsError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "weights_only" not in msg and "trust" not in msg and "\n" not in msg
    assert "corrupt or not a torch checkpoint" in msg
