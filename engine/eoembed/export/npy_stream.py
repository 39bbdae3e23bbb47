"""A ``.npy`` array written block by block, for outputs too large to hold in memory at once.

The shape is declared up front (the row count is known before the rows come) and the header
written first, then each block's bytes are appended; the file is the one ``np.save`` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class NpyStream:
    """Rows of a ``(rows, *shape)`` array of `dtype` appended to `path` in order."""

    def __init__(self, path: str | Path, dtype: Any, rows: int, shape: tuple[int, ...] = ()) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = (rows, *shape)
        self.written = 0
        self.path = Path(path)
        self._fh = open(self.path, "wb")  # noqa: SIM115  (closed in close())
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_2_0(self._fh, header)

    def write(self, block: Any) -> None:
        """Append rows (their count and trailing shape must fit the declared shape)."""
        arr = np.ascontiguousarray(np.asarray(block, dtype=self.dtype))
        if arr.shape[1:] != self.shape[1:] or self.written + arr.shape[0] > self.shape[0]:
            raise ValueError(f"block {arr.shape} does not fit the array {self.shape} after {self.written} rows")
        self._fh.write(arr.tobytes())
        self.written += arr.shape[0]

    def close(self) -> None:
        """Finish the file; it must hold exactly the declared number of rows."""
        self._fh.close()
        if self.written != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.written} rows written of {self.shape[0]} declared")
