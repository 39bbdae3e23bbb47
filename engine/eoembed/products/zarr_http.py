"""A read-only Zarr store over HTTP(S) or a local folder, through a product's :class:`Remote`
(byte ranges, retries, redaction). zarr-python decodes; this only moves bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)

from .remote import NotFound, Remote, join


class HttpZarrStore(Store):
    """Keys of a Zarr store under `url`, fetched with `remote` (whole keys or byte ranges)."""

    def __init__(self, url: str, remote: Remote) -> None:
        super().__init__(read_only=True)
        self.url = url.rstrip("/")
        self.remote = remote

    @property
    def supports_writes(self) -> bool:
        return False

    @property
    def supports_deletes(self) -> bool:
        return False

    @property
    def supports_listing(self) -> bool:
        return False

    @property
    def supports_partial_writes(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HttpZarrStore) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def _read(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        url = join(self.url, key)
        what = f"the Zarr key {key}"
        try:
            if byte_range is None:
                return self.remote.get(url, what=what)
            if isinstance(byte_range, RangeByteRequest):
                return self.remote.get(url, byte_range.start, byte_range.end, what=what)
            if isinstance(byte_range, OffsetByteRequest):
                return self.remote.get(url, byte_range.offset, None, what=what)
            if isinstance(byte_range, SuffixByteRequest):
                return self.remote.suffix(url, byte_range.suffix, what=what)
        except NotFound:
            return None
        raise TypeError(f"unsupported byte range {byte_range!r}")

    async def get(self, key: str, prototype: Any, byte_range: ByteRequest | None = None) -> Any:
        data = await asyncio.to_thread(self._read, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(self, prototype: Any,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Any]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.remote.exists, join(self.url, key))

    async def set(self, key: str, value: Any) -> None:
        raise PermissionError("this product store is read-only")

    async def delete(self, key: str) -> None:
        raise PermissionError("this product store is read-only")

    async def list(self) -> AsyncIterator[str]:  # type: ignore[override]
        raise NotImplementedError("listing is not offered; product stores are read by known keys")
        yield ""

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        raise NotImplementedError("listing is not offered; product stores are read by known keys")
        yield ""

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        raise NotImplementedError("listing is not offered; product stores are read by known keys")
        yield ""
