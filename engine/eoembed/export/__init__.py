"""Writing results: GeoParquet for vectors, GeoTIFF for grids (more formats in this package)."""

from .atomic import atomic_path
from .geoparquet import read_geoparquet, write_geoparquet
from .geotiff import read_geotiff, write_geotiff

__all__ = ["atomic_path", "read_geoparquet", "read_geotiff", "write_geoparquet", "write_geotiff"]
