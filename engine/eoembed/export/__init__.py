"""Writing results: GeoParquet and NPZ for vectors, GeoTIFF and NetCDF stacks for grids, a manifest."""

from .atomic import atomic_path
from .geoparquet import read_geoparquet, write_geoparquet
from .geotiff import read_geotiff, write_geotiff
from .layout import safe_name
from .load import load_export
from .manifest import Manifest, read_manifest
from .npz import read_npz, write_npz
from .stack import read_grid_stack, write_grid_stack

__all__ = [
    "Manifest", "atomic_path", "load_export", "read_geoparquet", "read_geotiff", "read_grid_stack",
    "read_manifest", "read_npz", "safe_name", "write_geoparquet", "write_geotiff", "write_grid_stack",
    "write_npz",
]
