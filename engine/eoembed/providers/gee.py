"""Sentinel-2 L2A from Google Earth Engine: composites computed by Earth Engine, pixels fetched
with ``computePixels`` in tiles under the request-size limit, several at a time.

Authentication: the user's persistent credentials (``earthengine authenticate``, or Google
application-default credentials), a service-account key file, or a ready
``google.auth`` credentials object. The Cloud project comes from ``project=``, else the
``EE_PROJECT`` environment variable, else the credentials' own project.

Units: the default collection ``COPERNICUS/S2_SR_HARMONIZED`` already shifts the scenes of
processing baseline ≥ 04.00 back by the +1000 BOA offset, so its values are reflectance
× 10000 like every other source and nothing is subtracted here. Other collections are read
as they are (``meta["boa_offset"]`` says which case applied).

Clouds: the ``SCL`` band masks no-data, saturated, cloud-shadow, cloud and cirrus pixels
before compositing. Per pixel, the number of clear observations is fetched with the
composite, so validity is exact.

The ``earthengine-api`` library keeps one global session per process: one Earth Engine
configuration (credentials, project, endpoint) is active at a time; a provider with another
configuration re-initialises it.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ..errors import ProviderError, SpecError
from ..grid import GridSpec, roi_mask
from ..sensors import S2_BANDS, SCL_INVALID
from ..specs import FrameSpec, SensorSpec, TemporalSpec
from .base import FetchRequest, Observation, Provider, make_observation
from .composite import frame_series, scene_date
from .redact import install_log_redaction, redact

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
#: Earth Engine's limit on the size of one computePixels answer, with a margin.
MAX_REQUEST_BYTES = 32 * 1024 * 1024
#: Earth Engine's limit on either side of one computePixels grid.
MAX_REQUEST_SIDE = 32768
_VALID_BAND = "eoembed_valid"
_EE_LOCK = threading.RLock()
_EE_ACTIVE: list[tuple | None] = [None]  # configuration key of the current ee session
_PROVIDER_IDS = itertools.count(1)


def ee_band(band: str) -> str:
    """Earth Engine's name of a canonical band: 'B02' → 'B2', 'B8A' → 'B8A', 'SCL' → 'SCL'."""
    if band.startswith("B") and band[1:].isdigit():
        return f"B{int(band[1:])}"
    return band


def tiles_for(width: int, height: int, max_pixels: int) -> list[tuple[int, int, int, int]]:
    """Split a ``width × height`` grid into ``(col0, row0, w, h)`` tiles of at most `max_pixels`."""
    side = max(1, min(MAX_REQUEST_SIDE, int(math.isqrt(max(1, max_pixels)))))
    tw = min(width, side)
    th = min(height, max(1, min(MAX_REQUEST_SIDE, max_pixels // tw)))
    return [
        (c, r, min(tw, width - c), min(th, height - r))
        for r in range(0, height, th)
        for c in range(0, width, tw)
    ]


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact(text.splitlines()[0] if len(text) < 400 else text[:400])


def _code(text: str, status: int) -> bool:
    """Whether `text` names HTTP `status` as a number of its own (not inside a port or a count)."""
    return re.search(rf"(?<![\d.:]){status}(?![\d.])", text) is not None


class EarthEngineProvider(Provider):
    """Sentinel-2 L2A composites and time series from Google Earth Engine.

    `project`: Google Cloud project registered for Earth Engine (default: ``EE_PROJECT``).
    `credentials`: None or ``"persistent"`` (stored user credentials / application-default
    credentials), a path to a service-account key JSON, or a ``google.auth`` credentials object.
    `collection`: an Earth Engine ImageCollection with Sentinel-2 L2A bands and ``SCL``.
    `max_pixels_per_request`: most grid pixels in one computePixels call (smaller tiles
    otherwise; the 32 MiB answer limit also applies). `workers`: calls in flight at once
    (keep within the project's concurrent-request quota). `retries`: retries of 429/5xx
    answers (the client's exponential backoff). `url`: another API endpoint (tests).
    """

    name = "gee"

    def __init__(
        self,
        project: str | None = None,
        credentials: Any = None,
        collection: str = DEFAULT_COLLECTION,
        *,
        max_pixels_per_request: int = 512 * 512,
        workers: int = 8,
        retries: int = 3,
        url: str | None = None,
        cloud_mask: bool = True,
    ) -> None:
        for name, value, lo in (("max_pixels_per_request", max_pixels_per_request, 1), ("workers", workers, 1),
                                ("retries", retries, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise SpecError(f"{name}={value!r} must be a whole number ≥ {lo}")
        if retries > 10:
            raise SpecError(f"retries={retries} must be at most 10")
        if not isinstance(collection, str) or not collection.strip():
            raise SpecError("collection must be an Earth Engine ImageCollection id like 'COPERNICUS/S2_SR_HARMONIZED'")
        if (isinstance(credentials, (str, Path)) and str(credentials) != "persistent"
                and not Path(credentials).expanduser().is_file()):
            raise SpecError(
                f"credentials={str(credentials)!r} is neither 'persistent' nor an existing service-account key file"
            )
        self.project = project
        self._credentials_arg = credentials
        self.collection = collection.strip()
        self.max_pixels_per_request = max_pixels_per_request
        self.workers = workers
        self.retries = retries
        self.url = url.rstrip("/") if url else None
        self.cloud_mask = cloud_mask
        self._lock = threading.Lock()
        self._session: tuple[Any, str] | None = None  # (credentials, project) once resolved
        self._uid = next(_PROVIDER_IDS)

    # -- session ----------------------------------------------------------------------------
    @property
    def credentials_kind(self) -> str:
        c = self._credentials_arg
        if c is None or c == "persistent":
            return "persistent"
        if isinstance(c, (str, Path)):
            return "service-account key"
        return type(c).__name__

    def _resolve(self) -> tuple[Any, str]:
        """Credentials and project, or a ProviderError saying what to set up."""
        with self._lock:
            if self._session is not None:
                return self._session
            try:
                import ee
            except ImportError as exc:
                raise ProviderError(
                    "source='gee' needs earthengine-api; install it with: pip install 'eoembed[gee]'"
                ) from exc
            creds = self._credentials_arg
            if creds is None or creds == "persistent":
                try:
                    creds = ee.data.get_persistent_credentials()
                except ee.EEException:
                    raise ProviderError(
                        "Earth Engine is not authenticated on this machine; run `earthengine authenticate` "
                        "(or ee.Authenticate() in Python) once, or pass credentials=<path to a service-account key JSON>"
                    ) from None
                except Exception as exc:
                    raise ProviderError(
                        f"Earth Engine credentials could not be loaded ({_message(exc)}); run `earthengine "
                        "authenticate` again or pass a service-account key"
                    ) from None
            elif isinstance(creds, (str, Path)):
                creds = self._service_account(Path(creds).expanduser())
            project = (
                self.project
                or os.environ.get("EE_PROJECT")
                or getattr(creds, "quota_project_id", None)
                or getattr(creds, "project_id", None)
            )
            if not project:
                raise ProviderError(
                    "no Google Cloud project for Earth Engine; pass project='my-project' or set the EE_PROJECT "
                    "environment variable to a project registered for Earth Engine"
                )
            self._session = (creds, str(project))
            return self._session

    @staticmethod
    def _service_account(path: Path) -> Any:
        import ee

        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ProviderError(f"the service-account key {path.name} is not readable JSON; download a new key") from None
        if not isinstance(info, dict) or info.get("type") != "service_account" or "client_email" not in info:
            raise ProviderError(
                f"{path.name} is not a service-account key (it needs \"type\": \"service_account\" and a "
                "client_email); download a JSON key from the Cloud console"
            )
        try:
            return ee.ServiceAccountCredentials(info["client_email"], key_file=str(path))
        except Exception as exc:
            raise ProviderError(f"the service-account key {path.name} could not be used ({_message(exc)})") from None

    def _ensure_session(self) -> None:
        """Initialise the earthengine-api session for this provider's configuration."""
        creds, project = self._resolve()
        key = (self._uid, project, self.url, self.retries)
        with _EE_LOCK:
            if _EE_ACTIVE[0] == key:
                return
            import ee

            install_log_redaction("googleapiclient", "google", "google_auth_httplib2", "ee", "urllib3", "requests")
            try:
                ee.Reset()
                ee.data.setMaxRetries(self.retries)  # before Initialize: it fetches the discovery document
                ee.Initialize(credentials=creds, project=project, url=self.url)
            except Exception as exc:
                _EE_ACTIVE[0] = None
                raise self._explain(exc, "connecting to Earth Engine") from None
            _EE_ACTIVE[0] = key

    # -- errors -----------------------------------------------------------------------------
    def _explain(self, exc: BaseException, doing: str) -> ProviderError:
        """One sentence for what went wrong, never with credentials in it."""
        msg = _message(exc)
        low = msg.lower()
        project = self._session[1] if self._session else "(none)"
        host = urlparse(self.url).netloc if self.url else "earthengine.googleapis.com"
        if "imagecollection.load" in low or ("asset" in low and "not found" in low):
            return ProviderError(
                f"Earth Engine has no image collection {self.collection!r} that project {project!r} can read "
                f"({msg}); check collection="
            )
        if "did not match any bands" in low or "band pattern" in low:
            return ProviderError(
                f"the Earth Engine collection {self.collection!r} lacks a band the request needs ({msg}); "
                "choose bands the collection has or another collection"
            )
        if any(k in low for k in ("quota", "too many", "resource_exhausted", "rate limit")) or _code(low, 429):
            return ProviderError(
                f"Earth Engine refused {doing} because project {project!r} is over its quota ({msg}); wait and "
                "try again, lower workers=, or ask for more quota"
            )
        if any(k in low for k in ("has not been used in project", "not registered", "permission", "permission_denied",
                                  "caller does not have")) or _code(low, 403):
            return ProviderError(
                f"project {project!r} may not use Earth Engine ({msg}); register it for Earth Engine, enable the "
                "Earth Engine API and check your role in it, or pass another project="
            )
        if any(k in low for k in ("authenticat", "unauthorized", "invalid_grant", "credentials", "token")) or _code(low, 401):
            return ProviderError(
                f"Earth Engine did not accept the credentials while {doing} ({msg}); run `earthengine "
                "authenticate` again or check the service-account key"
            )
        if "total request size" in low or "too large" in low:
            return ProviderError(
                f"an Earth Engine request was too large ({msg}); lower max_pixels_per_request="
            )
        if any(k in low for k in ("connection", "timed out", "timeout", "name or service", "unreachable",
                                  "failed to establish", "errno")):
            return ProviderError(f"could not reach Earth Engine at {host} while {doing} ({msg}); check the connection")
        return ProviderError(f"Earth Engine failed while {doing}: {msg}")

    # -- expressions ------------------------------------------------------------------------
    def _collection(self, spatial: Any, temporal: TemporalSpec, sensor: SensorSpec) -> Any:
        import ee

        place = spatial.shape("EPSG:4326")
        region = ee.Geometry(json.loads(json.dumps(_geojson(place))), None, False)
        return (
            ee.ImageCollection(self.collection)
            .filterBounds(region)
            .filterDate(temporal.start.isoformat(), temporal.end.isoformat())
            .filter(ee.Filter.lte("CLOUDY_PIXEL_PERCENTAGE", sensor.cloudy_pct))
        )

    def _composite(self, coll: Any, bands: list[str], method: str, fill: float) -> Any:
        """The image Earth Engine computes: composite bands (masked → `fill`) + clear count."""
        names = [ee_band(b) for b in bands]
        if self.cloud_mask:
            def masked(img: Any) -> Any:
                scl = img.select("SCL")
                ok = scl.neq(SCL_INVALID[0])
                for c in SCL_INVALID[1:]:
                    ok = ok.And(scl.neq(c))
                return img.select(names).updateMask(ok)

            stack = coll.map(masked)
        else:
            stack = coll.select(names)
        comp = stack.median() if method == "median" else stack.sort("system:time_start").mosaic()
        count = stack.count().select([names[0]], [_VALID_BAND]).unmask(0, False).toFloat()
        return comp.unmask(fill, False).toFloat().addBands(count)

    # -- fetching ---------------------------------------------------------------------------
    def _list(self, coll: Any) -> list[dict[str, Any]]:
        """Ids, acquisition times and cloud cover of the images in `coll` (one request)."""
        import ee

        info = ee.Dictionary({
            "ids": coll.aggregate_array("system:index"),
            "times": coll.aggregate_array("system:time_start"),
            "clouds": coll.aggregate_array("CLOUDY_PIXEL_PERCENTAGE"),
        })
        try:
            out = ee.data.computeValue(info)
        except Exception as exc:
            raise self._explain(exc, "listing images") from None
        images = [
            {"id": str(i), "time": datetime.fromtimestamp(int(t) / 1000, tz=timezone.utc),
             "cloud": float(c) if c is not None else None}
            for i, t, c in zip(out.get("ids", []), out.get("times", []), out.get("clouds", []))
        ]
        return sorted(images, key=lambda d: (d["time"], d["id"]))

    def _pixels(self, images: list[Any], grid: GridSpec, nbands: int,
                stats: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Fetch each of `images` on `grid`, tile by tile, all tiles of all images in parallel.

        Returns per image: values ``(C, H, W)`` and clear-observation counts ``(H, W)``.
        """
        import ee

        budget = min(self.max_pixels_per_request, MAX_REQUEST_BYTES // (4 * (nbands + 1)))
        tiles = tiles_for(grid.width, grid.height, budget)
        t = grid.transform
        crs = {"crsCode": grid.crs} if grid.crs.upper().startswith("EPSG:") else {"crsWkt": grid.crs}

        def one(task: tuple[int, tuple[int, int, int, int]]) -> np.ndarray:
            k, (c0, r0, w, h) = task
            request = {
                "expression": images[k],
                "fileFormat": "NUMPY_NDARRAY",
                "grid": {
                    "dimensions": {"width": w, "height": h},
                    "affineTransform": {"scaleX": t.a, "shearX": t.b, "translateX": t.c + c0 * t.a + r0 * t.b,
                                        "shearY": t.d, "scaleY": t.e, "translateY": t.f + c0 * t.d + r0 * t.e},
                    **crs,
                },
            }
            try:
                return ee.data.computePixels(request)
            except Exception as exc:
                raise self._explain(exc, "fetching pixels") from None

        out = [(np.zeros((nbands, grid.height, grid.width), np.float32), np.zeros((grid.height, grid.width), np.float32))
               for _ in images]
        tasks = [(k, tile) for k in range(len(images)) for tile in tiles]
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="eoembed-gee") as pool:
            for (k, (c0, r0, w, h)), arr in zip(tasks, pool.map(one, tasks)):
                names = arr.dtype.names or ()
                band_names = [n for n in names if n != _VALID_BAND]
                if len(band_names) != nbands or _VALID_BAND not in names or arr.shape != (h, w):
                    raise ProviderError(
                        f"Earth Engine answered a {arr.shape} array with bands {list(names)} for a {h}×{w} tile "
                        f"of {nbands} bands; this is unexpected, please report it"
                    )
                values, count = out[k]
                for j, n in enumerate(band_names):
                    values[j, r0:r0 + h, c0:c0 + w] = arr[n]
                count[r0:r0 + h, c0:c0 + w] = arr[_VALID_BAND]
        stats["tiles_per_frame"] = len(tiles)
        stats["tiles"] = stats.get("tiles", 0) + len(tasks)
        stats["requests"] = stats.get("requests", 0) + len(tasks)
        return out

    def fetch(self, request: FetchRequest) -> Observation:
        sensor, grid, temporal = request.sensor, request.grid, request.temporal
        bands = list(sensor.bands or [b for b in S2_BANDS if b not in ("B10", "SCL")])
        self._ensure_session()
        coll = self._collection(request.spatial, temporal, sensor)
        images = self._list(coll)
        stats: dict[str, int] = {"requests": 1, "tiles": 0}
        if not images:
            raise ProviderError(
                f"no {self.collection} images in Earth Engine intersect the place between {temporal.start} and "
                f"{temporal.end} (end excluded) with CLOUDY_PIXEL_PERCENTAGE ≤ {sensor.cloudy_pct:g}; widen the "
                "time window or raise cloudy_pct"
            )
        windows = request.frames.windows(temporal) if request.frames is not None else [temporal]
        jobs = []
        for win in windows:
            inside = [im for im in images if win.contains(im["time"].date())]
            if inside:
                sub = coll.filterDate(win.start.isoformat(), win.end.isoformat())
                jobs.append((win, inside, self._composite(sub, bands, sensor.composite, sensor.fill_value)))
        layers, valid, when = [], [], []
        fetched = self._pixels([image for _, _, image in jobs], grid, len(bands), stats)
        for (win, inside, _), (vals, count) in zip(jobs, fetched):
            ok = count > 0
            vals[:, ~ok] = sensor.fill_value
            layers.append(vals)
            valid.append(ok)
            when.append(scene_date([im["time"].date() for im in inside]) or win.midpoint)
        meta: dict[str, Any] = {
            "provider": self.name,
            "collection": self.collection,
            "project": self._session[1] if self._session else None,
            "images": [im["id"] for im in images],
            "dates": [im["time"].date().isoformat() for im in images],
            "cloud_cover": {im["id"]: im["cloud"] for im in images},
            "window": temporal.key(),
            "cloudy_pct": sensor.cloudy_pct,
            "composite": sensor.composite,
            "cloud_mask": "SCL" if self.cloud_mask else None,
            "boa_offset": "removed by the collection (harmonized)" if "HARMONIZED" in self.collection.upper()
            else "not removed (collection is not harmonized)",
            "workers": self.workers,
        }
        if request.frames is None:
            if not valid or not valid[0].any():
                raise ProviderError(
                    f"{len(images)} {self.collection} images cover the place in {temporal.key()} but none has a "
                    "clear pixel there (clouds or no data); widen the window or raise cloudy_pct"
                )
            values, ok, frame_dates = layers[0][None], valid[0][None], when
        else:
            values, ok, frame_dates = self._frames(layers, valid, when, jobs, temporal, request.frames, sensor, meta)
        meta.update(stats)
        coverage = float(ok.any(axis=0).mean()) if ok.size else 0.0
        meta["coverage"] = round(coverage, 6)
        meta["partial"] = coverage < 1.0
        if meta["partial"]:
            meta["fill_value"] = sensor.fill_value
        return make_observation(values, ok, grid, bands, frame_dates, roi_mask(request.spatial, grid), meta)

    @staticmethod
    def _frames(layers: list[np.ndarray], valid: list[np.ndarray], when: list[date], jobs: list, temporal: TemporalSpec,
                frames: FrameSpec, sensor: SensorSpec, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[date]]:
        """Apply the empty-frame policy to the per-window composites Earth Engine computed."""
        if layers:
            stack, ok = np.stack(layers), np.stack(valid)
        else:
            stack = np.zeros((0, 1, 1, 1), np.float32)
            ok = np.zeros((0, 1, 1), bool)
        fr = frame_series(stack, ok, when, temporal, frames, "mosaic", sensor.fill_value)
        by_start = {win.start.isoformat(): [im["time"].date().isoformat() for im in inside] for win, inside, _ in jobs}
        for f in fr.meta:
            f["scenes"] = by_start.get(f["start"], [])
        meta["frames"] = fr.meta
        meta["empty_frames"] = frames.empty
        return fr.values, fr.valid, fr.dates

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "collection": self.collection, "project": self.project or os.environ.get(
            "EE_PROJECT"), "credentials": self.credentials_kind}


def _geojson(geom: Any) -> dict[str, Any]:
    import shapely.geometry

    return shapely.geometry.mapping(geom)
