"""The first image of a cloud-optimised GeoTIFF, from the bytes of its header.

What a windowed read needs: size, tiling, pixel type, compression and predictor, where each tile
lies in the file, the nodata value, and the georeferencing (EPSG code and a north-up transform).
Layouts this module does not decode (striped files, LZW/JPEG/ZSTD…, floating-point predictor,
planar multi-band, pixel-is-point, user-defined CRSs, rotated transforms) are refused with
:class:`Unsupported`, and their reads go through GDAL instead.

Specifications: TIFF 6.0 (tags and IFDs), BigTIFF (the 8-byte variant) and OGC GeoTIFF 1.1
(model tie point, pixel scale and transformation tags; the GeoKey directory).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: bytes fetched for the header (what GDAL ingests at open); GDAL's COG writer puts every IFD and
#: tile index first, and values beyond these bytes are fetched when needed
HEADER_BYTES = 16384

_TYPES = {1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 5: ("II", 8), 6: ("b", 1), 7: ("B", 1),
          8: ("h", 2), 9: ("i", 4), 10: ("ii", 8), 11: ("f", 4), 12: ("d", 8), 16: ("Q", 8), 17: ("q", 8),
          18: ("Q", 8)}
_DEFLATE = (8, 32946)
_SAMPLE = {(1, 8): "u1", (1, 16): "u2", (1, 32): "u4", (2, 8): "i1", (2, 16): "i2", (2, 32): "i4",
           (3, 32): "f4", (3, 64): "f8"}


class NotTiff(ValueError):
    """The bytes are not a TIFF file at all."""


class Unsupported(ValueError):
    """A TIFF this module does not read (GDAL reads it instead); the message says why."""


@dataclass(frozen=True)
class CogHeader:
    """The full-resolution image of a GeoTIFF: what a windowed read of its tiles needs."""

    width: int
    height: int
    bands: int
    dtype: np.dtype  # with the file's byte order
    tile_width: int
    tile_height: int
    compression: int  # 1 none, 8 / 32946 deflate
    predictor: int  # 1 none, 2 horizontal differencing
    offsets: tuple[int, ...]  # per tile, row by row
    counts: tuple[int, ...]
    nodata: float | None
    epsg: int
    transform: tuple[float, float, float, float, float, float]  # a, b, c, d, e, f (GDAL's order: x = a·col + b·row + c)

    @property
    def tiles_across(self) -> int:
        return -(-self.width // self.tile_width)

    @property
    def tiles_down(self) -> int:
        return -(-self.height // self.tile_height)

    @property
    def res(self) -> float:
        return self.transform[0]

    @property
    def origin(self) -> tuple[float, float]:
        return self.transform[2], self.transform[5]


def parse_header(data: bytes, fetch: Callable[[int, int], bytes]) -> CogHeader:
    """The first image of the TIFF whose first bytes are `data`; `fetch(start, length)` reads
    further bytes when a tag's values lie beyond them (a long tile index)."""
    if len(data) < 16:
        raise NotTiff("the file is too short to be a TIFF")
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None:
        raise NotTiff("the file is not a TIFF")
    magic = struct.unpack(order + "H", data[2:4])[0]
    if magic == 42:
        big, first = False, struct.unpack(order + "I", data[4:8])[0]
    elif magic == 43:
        big, first = True, struct.unpack(order + "Q", data[8:16])[0]
    else:
        raise NotTiff("the file is not a TIFF")

    def read(start: int, length: int) -> bytes:
        if start + length <= len(data):
            return data[start : start + length]
        return fetch(start, length)

    tags = _read_ifd(read, order, big, first)
    return _image(tags, order)


def _read_ifd(read: Callable[[int, int], bytes], order: str, big: bool, at: int) -> dict[int, tuple]:
    count_fmt, entry_size, inline = ("Q", 20, 8) if big else ("H", 12, 4)
    n = struct.unpack(order + count_fmt, read(at, struct.calcsize(count_fmt)))[0]
    if n > 4096:
        raise NotTiff("the TIFF's first directory is corrupt")
    raw = read(at + struct.calcsize(count_fmt), n * entry_size)
    tags: dict[int, tuple] = {}
    for k in range(n):
        e = raw[k * entry_size : (k + 1) * entry_size]
        if big:
            tag, typ, cnt = struct.unpack(order + "HHQ", e[:12])
            field = e[12:20]
        else:
            tag, typ, cnt = struct.unpack(order + "HHI", e[:8])
            field = e[8:12]
        if typ not in _TYPES:
            continue
        fmt, size = _TYPES[typ]
        nbytes = size * cnt
        if nbytes <= inline:
            blob = field[:nbytes]
        else:
            where = struct.unpack(order + ("Q" if big else "I"), field)[0]
            blob = read(where, nbytes)
        if typ == 2:
            tags[tag] = (blob.split(b"\x00", 1)[0].decode("latin-1"),)
        elif typ in (5, 10):
            pairs = struct.unpack(order + fmt[0] * (2 * cnt), blob)
            tags[tag] = tuple(pairs[i] / pairs[i + 1] if pairs[i + 1] else math.nan for i in range(0, len(pairs), 2))
        else:
            tags[tag] = struct.unpack(order + fmt * cnt, blob)
    return tags


def _one(tags: dict[int, tuple], tag: int, default: int | None = None) -> int:
    if tag in tags:
        return int(tags[tag][0])
    if default is None:
        raise Unsupported(f"TIFF tag {tag} is missing")
    return default


def _image(tags: dict[int, tuple], order: str) -> CogHeader:
    if _one(tags, 254, 0) & 1:
        raise Unsupported("the first image is an overview")
    if 322 not in tags or 324 not in tags:
        raise Unsupported("the image is not tiled")
    compression = _one(tags, 259, 1)
    if compression not in (1, *_DEFLATE):
        raise Unsupported(f"compression {compression} is not DEFLATE or none")
    predictor = _one(tags, 317, 1)
    if predictor not in (1, 2):
        raise Unsupported(f"predictor {predictor}")
    spp = _one(tags, 277, 1)
    if spp > 1 and _one(tags, 284, 1) != 1:
        raise Unsupported("planar multi-band layout")
    bits = set(tags.get(258, (1,)))
    fmts = set(tags.get(339, (1,)))
    if len(bits) != 1 or len(fmts) != 1:
        raise Unsupported("bands of different pixel types")
    kind = _SAMPLE.get((fmts.pop(), bits.pop()))
    if kind is None:
        raise Unsupported("pixel type")
    if predictor == 2 and kind.startswith("f"):
        raise Unsupported("horizontal predictor on floating-point pixels")
    width, height = _one(tags, 256), _one(tags, 257)
    tw, th = _one(tags, 322), _one(tags, 323)
    offsets, counts = tuple(int(v) for v in tags[324]), tuple(int(v) for v in tags.get(325, ()))
    if len(offsets) != -(-width // tw) * -(-height // th) or len(counts) != len(offsets):
        raise Unsupported("tile index does not match the image size")
    nodata = None
    if 42113 in tags:
        try:
            nodata = float(str(tags[42113][0]).strip())
        except ValueError:
            nodata = None
    epsg, transform = _georeferencing(tags)
    return CogHeader(width, height, spp, np.dtype(order + kind), tw, th, compression, predictor, offsets, counts,
                     nodata, epsg, transform)


def _georeferencing(tags: dict[int, tuple]) -> tuple[int, tuple[float, float, float, float, float, float]]:
    keys = tags.get(34735)
    if not keys or len(keys) < 4:
        raise Unsupported("no GeoKey directory")
    geo: dict[int, int] = {}
    for k in range(keys[3]):
        key, location, _, value = keys[4 + 4 * k : 8 + 4 * k]
        if location == 0:
            geo[key] = value
    if geo.get(1025, 1) != 1:
        raise Unsupported("pixel-is-point georeferencing")
    model = geo.get(1024)
    epsg = geo.get(3072) if model == 1 else geo.get(2048) if model == 2 else None
    if not epsg or epsg == 32767:
        raise Unsupported("a CRS without an EPSG code")
    if 34264 in tags:
        m = tags[34264]
        a, b, c, d, e, f = m[0], m[1], m[3], m[4], m[5], m[7]
    elif 33550 in tags and 33922 in tags:
        sx, sy = tags[33550][:2]
        i, j, _, x, y, _ = tags[33922][:6]
        a, b, c, d, e, f = sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy
    else:
        raise Unsupported("no georeferencing tags")
    if b or d or a <= 0 or e >= 0:
        raise Unsupported("a rotated or south-up transform")
    return int(epsg), (float(a), float(b), float(c), float(d), float(e), float(f))


def decode_tile(header: CogHeader, raw: bytes) -> np.ndarray:
    """One tile's pixels ``(tile_height, tile_width, bands)`` in native byte order."""
    if header.compression in _DEFLATE:
        import zlib

        raw = zlib.decompress(raw)
    th, tw, nb = header.tile_height, header.tile_width, header.bands
    need = th * tw * nb * header.dtype.itemsize
    if len(raw) < need:
        raise ValueError(f"a tile decoded to {len(raw)} bytes, {need} expected")
    native = header.dtype.newbyteorder("=")
    arr = np.frombuffer(raw, header.dtype, th * tw * nb).reshape(th, tw, nb).astype(native, copy=False)
    if header.predictor == 2:  # each row was stored as differences to the pixel on its left (integers wrap)
        arr = np.cumsum(arr, axis=1, dtype=native)
    return arr
