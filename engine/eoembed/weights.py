"""Checkpoint resolution and safe loading: hf:<repo>[@rev], local files and folders, mirrors."""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eoembed.errors import WeightsError

__all__ = [
    "HF_PREFIX",
    "SAFE_DATA_CLASSES",
    "extract_state_dict",
    "file_sha256",
    "load_checkpoint",
    "load_into",
    "resolve",
]

HF_PREFIX = "hf:"
"""Prefix of a Hugging Face Hub source: ``hf:<owner>/<repo>[@<revision>]``."""

_TRUTHY = {"1", "on", "yes", "true"}
_SHOWN = 5  # how many offending keys an error message names


# --------------------------------------------------------------------------- resolution


def resolve(source: str | os.PathLike, filename: str | None = None, *,
            sha256: str | None = None, repo_type: str = "model") -> Path:
    """Local path of a checkpoint file, downloading it through the Hub cache when allowed.

    ``source`` is one of:

    - ``"hf:<owner>/<repo>[@<revision>]"`` with ``filename`` inside the repository. The
      folder ``$EOEMBED_WEIGHTS_DIR/<owner>/<repo>/<filename>`` is searched first (a mirror
      that needs no Hub at all), then the Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``,
      read at call time) without touching the network, and only then the Hub itself
      (``$EOEMBED_HF_ENDPOINT`` as endpoint when set) unless ``HF_HUB_OFFLINE`` is set.
    - a local file: returned as is when ``filename`` is None or is the file's own name;
      otherwise ``filename`` is looked up next to it (e.g. ``config.json`` beside
      ``encoder.pt``).
    - a local folder: ``filename`` is joined to it.

    ``sha256`` given: the file's digest is verified and a mismatch raises WeightsError.
    ``repo_type="dataset"`` resolves a file of a Hub dataset (precomputed products).
    """
    text = os.fspath(source)
    if text.startswith(HF_PREFIX):
        path = _resolve_hf(text[len(HF_PREFIX):], filename, repo_type)
    else:
        path = _resolve_local(Path(text).expanduser(), filename)
    if sha256 is not None:
        digest = file_sha256(path)
        if digest.lower() != sha256.lower():
            raise WeightsError(
                f"Checkpoint {path} has SHA-256 {digest} but {sha256} was expected: the file is "
                "corrupt or a different version; delete it and fetch it again, or update the "
                "expected hash."
            )
    return path


def _resolve_local(path: Path, filename: str | None) -> Path:
    if path.is_file():
        if filename is None or path.name == filename:
            return path
        companion = path.parent / filename
        if companion.is_file():
            return companion
        raise WeightsError(
            f"Weights file {path} was given but {filename!r} is also needed and is not beside it "
            f"in {path.parent}: put it there or pass the folder that holds both."
        )
    if path.is_dir():
        if filename is None:
            raise WeightsError(
                f"Weights source {path} is a folder: name the file inside it to load."
            )
        candidate = path / filename
        if candidate.is_file():
            return candidate
        present = sorted(p.name for p in path.iterdir())[:10]
        raise WeightsError(
            f"Weights folder {path} has no {filename!r} (it holds {present}): put the file there "
            "or pass another folder."
        )
    raise WeightsError(
        f"Weights source {str(path)!r} is neither an existing file or folder nor "
        f"'{HF_PREFIX}<owner>/<repo>[@revision]': check the path."
    )


def _parse_hf(spec: str) -> tuple[str, str | None]:
    repo, at, revision = spec.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", repo) or (at and not revision):
        raise WeightsError(
            f"Weights source '{HF_PREFIX}{spec}' is not of the form "
            f"'{HF_PREFIX}<owner>/<repo>[@revision]': fix the spelling."
        )
    return repo, revision or None


def _hub_cache_dir() -> Path:
    """The Hub cache folder as the environment says now (huggingface_hub reads it at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _resolve_hf(spec: str, filename: str | None, repo_type: str = "model") -> Path:
    repo, revision = _parse_hf(spec)
    if not filename:
        raise WeightsError(
            f"Weights source '{HF_PREFIX}{spec}' names a repository: also name the file to "
            "load from it."
        )
    mirror = os.environ.get("EOEMBED_WEIGHTS_DIR")
    if mirror:
        candidate = Path(mirror).expanduser() / repo / filename
        if candidate.is_file():
            return candidate

    from huggingface_hub import hf_hub_download

    cache_dir = _hub_cache_dir()
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=True, repo_type=repo_type))
    except Exception as exc:  # not cached (LocalEntryNotFoundError and kin across versions)
        cache_miss = exc

    where = (f"$EOEMBED_WEIGHTS_DIR/{repo}/{filename}" if not mirror
             else f"{Path(mirror).expanduser() / repo / filename}")
    hint = (f"download it with `hf download {repo} {filename}` (cache {cache_dir}), or put it at "
            f"{where}, or pass a local path as weights")
    if _hub_offline():
        raise WeightsError(
            f"Checkpoint file {filename!r} of {repo}"
            f"{'@' + revision if revision else ''} is not in the Hugging Face cache and "
            f"HF_HUB_OFFLINE is set: {hint}."
        ) from cache_miss
    endpoint = os.environ.get("EOEMBED_HF_ENDPOINT") or None
    unreachable = _unreachable(endpoint or "https://huggingface.co")
    if unreachable:
        raise WeightsError(
            f"Could not download {filename!r} of {repo}{'@' + revision if revision else ''}: the weights "
            f"server {unreachable}: {hint}."
        )
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir,
                                    endpoint=endpoint, repo_type=repo_type))
    except Exception as exc:
        raise WeightsError(
            f"Could not download {filename!r} of {repo}{'@' + revision if revision else ''}"
            f"{' from ' + endpoint if endpoint else ''} ({type(exc).__name__}: "
            f"{_first_line(exc)}): {hint}."
        ) from exc


_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _unreachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """Why the server at `endpoint` cannot be reached (a few seconds at most), or None.

    Without this, the Hub client retries a dead server for half a minute, logging each retry.
    Behind a proxy the client's own connection decides, so nothing is checked.
    """
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    url = urlparse(endpoint)
    if not url.hostname:
        return None
    port = url.port or (443 if url.scheme == "https" else 80)
    from eoembed.providers.redact import redact

    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"{redact(endpoint)} cannot be reached ({exc.strerror or type(exc).__name__})"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- safe loading


#: The only Python classes a checkpoint may hold beyond tensors, containers and primitives:
#: plain data whose unpickling runs no code of the file's choosing (an attribute bag, arrays).
SAFE_DATA_CLASSES: dict[str, str] = {
    "argparse.Namespace": "argparse:Namespace",
    "numpy.core.multiarray._reconstruct": "numpy.core.multiarray:_reconstruct",
    "numpy._core.multiarray._reconstruct": "numpy.core.multiarray:_reconstruct",
    "numpy.core.multiarray.scalar": "numpy.core.multiarray:scalar",
    "numpy._core.multiarray.scalar": "numpy.core.multiarray:scalar",
    "numpy.ndarray": "numpy:ndarray",
    "numpy.dtype": "numpy:dtype",
}


def load_checkpoint(path: str | os.PathLike, *, allow: Iterable[str] = ()) -> Any:
    """Read a checkpoint without ever running arbitrary pickled code.

    ``*.safetensors`` files are read with safetensors. Anything else goes through
    ``torch.load(weights_only=True)``, torch's restricted unpickler that admits tensors,
    containers and primitive types only. A model whose published checkpoint also holds plain
    data objects names them in ``allow`` (e.g. ``"argparse.Namespace"``); only names in
    :data:`SAFE_DATA_CLASSES` are accepted there, so no callable (``io.open``, ``os.system``,
    ``eval`` …) can ever be admitted. A refused object is a WeightsError that names it and
    says to convert the file, never to admit it. Tensors land on the CPU.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Checkpoint {path} does not exist: check the path.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise WeightsError(
                f"Checkpoint {path} is not a readable safetensors file ({_first_line(exc)}): "
                "fetch it again."
            ) from None
    extra = [_import_allowed(name) for name in allow]
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(extra):
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not the user's business
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(exc)
        if refused is None:
            raise WeightsError(
                f"Checkpoint {path} could not be read (the restricted unpickler met data it does not "
                "accept): the file is corrupt or not a torch checkpoint; fetch it again."
            ) from None
        raise WeightsError(
            f"Checkpoint {path} holds the Python object {refused}, which is not plain data that can "
            "be loaded safely, so it is refused; use a safetensors or plain state-dict version of "
            "the checkpoint."
        ) from None
    except Exception as exc:
        raise WeightsError(
            f"Checkpoint {path} could not be read ({type(exc).__name__}): the file is corrupt or "
            "not a torch checkpoint; fetch it again."
        ) from None


def _refused_global(exc: BaseException) -> str | None:
    match = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return match.group(1) if match else None


def _import_allowed(name: str) -> Any:
    """The class named by an allow-list entry; only :data:`SAFE_DATA_CLASSES` are admitted."""
    target = SAFE_DATA_CLASSES.get(str(name))
    if target is None:
        raise WeightsError(
            f"Allow-list entry {name!r} is not one of the plain data classes that can be "
            f"unpickled safely ({', '.join(sorted(SAFE_DATA_CLASSES))}): it is never admitted."
        )
    module_name, _, attr = target.partition(":")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core is a deprecated alias in numpy 2
        obj: Any = importlib.import_module(module_name)
    return getattr(obj, attr)


# --------------------------------------------------------------------------- state dicts


def extract_state_dict(obj: Any, *, prefixes: Sequence[str] = (),
                       container_keys: Sequence[str] = ("state_dict", "model")) -> dict[str, Tensor]:
    """Dig the tensor dictionary out of a loaded checkpoint.

    Descends into the first of ``container_keys`` present (repeatedly, for wrappers of
    wrappers), keeps only tensor values and, when ``prefixes`` are given, only the keys that
    start with one of them, with that prefix stripped (the first matching prefix wins).
    """
    current = obj
    while isinstance(current, Mapping):
        inner = next((current[k] for k in container_keys
                      if k in current and isinstance(current[k], Mapping)), None)
        if inner is None:
            break
        current = inner
    if not isinstance(current, Mapping):
        raise WeightsError(
            f"Checkpoint holds a {type(current).__name__}, not a dictionary of tensors: it is not "
            "a state dict this loader understands."
        )
    tensors = {str(k): v for k, v in current.items() if isinstance(v, Tensor)}
    if prefixes:
        kept: dict[str, Tensor] = {}
        for key, value in tensors.items():
            for prefix in prefixes:
                if key.startswith(prefix):
                    kept[key[len(prefix):]] = value
                    break
        if not kept:
            raise WeightsError(
                f"Checkpoint has no tensors under the prefixes {list(prefixes)} (its first keys: "
                f"{list(tensors)[:_SHOWN]}): the file is not the expected model."
            )
        tensors = kept
    if not tensors:
        raise WeightsError("Checkpoint holds no tensors: the file is not a model state dict.")
    return tensors


def load_into(module: torch.nn.Module, state_dict: Mapping[str, Tensor], *, strict: bool = True,
              what: str = "") -> None:
    """``module.load_state_dict`` with an error that names what does not fit.

    Raises WeightsError naming the first few missing keys, unexpected keys and shape
    mismatches (``name: checkpoint (a, b) vs model (c, d)``). With ``strict=False`` missing
    and unexpected keys are tolerated, shape mismatches never are.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if strict and missing:
        problems.append(f"missing {_some(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {_some(mismatched)}")
    if problems:
        label = what or type(module).__name__
        raise WeightsError(
            f"Checkpoint does not fit {label} ({'; '.join(problems)}): use the weights made for "
            "this model and size."
        )
    module.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=strict)


def _some(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    more = len(items) - _SHOWN
    return f"{shown} (+{more} more)" if more > 0 else shown


def choose_source(
    weights: str | None, weights_file: str | None, default: tuple[str, str]
) -> tuple[str, str | None]:
    """(source, file inside it) of a model's checkpoint: `default` unless the user overrides.

    A Hub repository or a folder override keeps the default file name (or `weights_file`);
    a file override is used as it is.
    """
    src, file = default
    if weights is None:
        return src, weights_file or file
    if weights_file:
        return weights, weights_file
    if weights.startswith("hf:") or Path(weights).expanduser().is_dir():
        return weights, file
    return weights, None
