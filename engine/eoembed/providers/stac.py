"""Sentinel-2 L2A from STAC APIs: search a catalogue, then read only the window of each COG a place needs.

Presets: ``"earth-search"`` (Element 84, the default) and ``"planetary-computer"`` (Microsoft,
asset URLs signed with a short-lived SAS token); any other STAC API URL works when its items
carry one COG asset per band (asset keys or ``eo:bands`` names/common names).

What real catalogues do and how it is handled:

* **BOA offset** — L2A products of processing baseline ≥ 04.00 (from 2022-01-25) carry
  +1000 in their digital numbers. Items whose ``earthsearch:boa_offset_applied`` is true were
  already harmonised by the catalogue; otherwise an item with ``s2:processing_baseline`` ≥ 4
  gets 1000 subtracted, so that values are reflectance × 10000 everywhere. What was removed is
  listed in ``meta["boa_offset_removed"]``.
* **10/20/60 m assets** — each asset is read at its own resolution and resampled onto the
  place's grid (bilinear for reflectance, nearest for the scene classification).
* **Grids** — a place's grid lies on the pixel lattice of the items under its centre
  (``proj:code``/``proj:epsg`` with ``proj:transform`` or ``proj:bbox``+``proj:shape``, else the
  header of one band COG per MGRS tile), by the rule every provider shares
  (:mod:`eoembed.working_grid`); assets on that lattice are read without resampling. The search
  made for the grid is the one the fetch uses.
* **Several UTM zones** — assets in another CRS are warped to the grid's CRS; items of one acquisition
  (same datatake) are merged into one scene before compositing, so overlapping tiles are
  not counted twice by the median.
* **Clouds** — the ``SCL`` band masks no-data, saturated, cloud-shadow, cloud and cirrus pixels.
* **Transient failures** — searches, token requests and COG reads (open and read) are retried
  with exponential backoff and jitter, `retries` times at most, when :mod:`.transient` finds
  the cause transient (HTTP 408/429/5xx, timeouts, resets, replies cut short); GDAL's own HTTP
  retries and its cache of failed URLs are switched off for these reads, so that one policy
  applies and a failure is never replayed from a cache. A permanent failure is one sentence
  naming the (redacted) URL and the HTTP status.
* **Requests per place** — one search per chunk of places (:meth:`StacProvider.prepare`, over
  the union of their footprints) answers every place of it. COGs on the grid's own lattice are read
  by :mod:`.cog_reader`: one header request per COG, each tile fetched once and kept decoded for
  every place; other reads go through GDAL, whose COGs stay open between places
  (:mod:`.remote_datasets`). Asset reads run on one long-lived thread pool sized for I/O
  (`workers`), whose threads keep their HTTP connections alive.
* **Secrets** — signed URLs and tokens never appear in errors, meta or ``describe()``, and every
  log record (rasterio, pystac-client, urllib3 … log dataset URLs) is redacted (see :mod:`.redact`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np
import rasterio
import shapely.geometry
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError

from ..errors import PermanentProviderError, ProviderError, SpecError
from ..grid import GridSpec
from ..sensors import S2_BANDS, SCL_INVALID, normalize_band
from ..specs import SensorSpec, SpatialSpec, TemporalSpec, crs_string, parse_crs
from ..working_grid import Lattice, place_lonlat
from .base import FetchRequest, Observation, Provider
from .cog_reader import CogReader, http_range_getter
from .composite import scenes_to_observation
from .raster_io import http_gdal_env, read_to_grid
from .redact import install_log_redaction, redact
from .remote_datasets import DatasetPool
from .stac_lattice import header_lattice, proj_lattices
from .transient import RemoteFailure, classify, probe

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Named catalogues: STAC API root, Sentinel-2 L2A collection id and how asset URLs are signed.
PRESETS: dict[str, dict[str, Any]] = {
    "earth-search": {
        "url": "https://earth-search.aws.element84.com/v1",
        "collection": "sentinel-2-l2a",
        "signing": None,
    },
    "planetary-computer": {
        "url": "https://planetarycomputer.microsoft.com/api/stac/v1",
        "collection": "sentinel-2-l2a",
        "signing": "planetary-computer",
        "sas_url": "https://planetarycomputer.microsoft.com/api/sas/v1",
    },
}
# Earth Search asset keys that the generic band aliases do not cover.
_EXTRA_KEYS = {"nir09": "B09", "wvp": None, "aot": None, "visual": None, "tci": None}
_COG_TYPES = ("image/tiff", "image/vnd.stac.geotiff")
#: area searches (one per prepared slice of places) remembered for the places' own searches
AREA_SEARCHES = 8


@dataclass
class StacItem:
    """What the provider keeps of one STAC item: band hrefs (unsigned), date, cloud, offset."""

    id: str
    when: datetime
    cloud_pct: float | None
    boa_offset: float
    hrefs: dict[str, str]
    scl: str | None
    acquisition: str
    footprint: shapely.Geometry | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    lattices: list[Lattice] = field(default_factory=list)  # from proj:*; empty: read a COG header

    @property
    def date(self) -> date:
        return self.when.date()


def _parse_datetime(text: str) -> datetime:
    """An RFC 3339 timestamp (any number of fractional digits; Z or an offset) in UTC."""
    text = re.sub(r"(\.\d{1,6})\d*", r"\1", text.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    m = re.match(r"^(.*T\d{2}:\d{2}:\d{2})\.(\d{1,6})(.*)$", text)
    if m:  # Python 3.10 accepts only 3 or 6 fractional digits
        text = f"{m[1]}.{m[2].ljust(6, '0')}{m[3]}"
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def boa_offset_for(properties: dict[str, Any]) -> float:
    """The digital-number offset to subtract from an L2A item's pixels (0 or 1000)."""
    for key in ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied"):
        if properties.get(key) is True:
            return 0.0  # the catalogue already harmonised the COGs
    pb = properties.get("s2:processing_baseline") or properties.get("sentinel:processing_baseline")
    try:
        return 1000.0 if pb is not None and float(pb) >= 4.0 else 0.0
    except (TypeError, ValueError):
        return 0.0


def _asset_band(key: str, asset: dict[str, Any]) -> str | None:
    """Canonical band of a COG asset, from its key or its ``eo:bands`` / ``bands`` entries."""
    href = str(asset.get("href", ""))
    mtype = str(asset.get("type", ""))
    if not (any(mtype.startswith(t) for t in _COG_TYPES) or urlparse(href).path.lower().endswith((".tif", ".tiff"))):
        return None
    names = [key]
    for entry in (asset.get("eo:bands") or []) + (asset.get("bands") or []):
        if isinstance(entry, dict):
            names += [entry.get("name"), entry.get("common_name"), entry.get("eo:common_name")]
    for name in names:
        if not name:
            continue
        low = str(name).lower()
        if low in _EXTRA_KEYS:
            if _EXTRA_KEYS[low]:
                return _EXTRA_KEYS[low]
            return None
        try:
            return normalize_band(str(name))
        except SpecError:
            continue
    return None


def parse_item(item: dict[str, Any]) -> StacItem | None:
    """A :class:`StacItem` from a STAC item dict, or None when it has no datetime or COG bands."""
    props = item.get("properties") or {}
    when = props.get("datetime") or props.get("start_datetime")
    if not when:
        return None
    hrefs: dict[str, str] = {}
    keys: dict[str, str] = {}
    exact: set[str] = set()
    for key, asset in (item.get("assets") or {}).items():
        band = _asset_band(key, asset)
        if band is None:
            continue
        is_exact = key.upper() == band or key.lower() in ("scl",)
        if band not in hrefs or (is_exact and band not in exact):
            hrefs[band] = asset["href"]
            keys[band] = key
            if is_exact:
                exact.add(band)
    scl = hrefs.pop("SCL", None)
    if not hrefs:
        return None
    cloud = props.get("eo:cloud_cover", props.get("s2:cloudy_pixel_percentage"))
    try:
        dt = _parse_datetime(str(when))
    except ValueError:
        return None
    acq = props.get("s2:datatake_id") or f"{props.get('platform', '')}|{dt.strftime('%Y%m%dT%H%M')}"
    footprint = None
    if item.get("geometry"):
        try:
            footprint = shapely.geometry.shape(item["geometry"])
        except Exception:  # a malformed footprint only loses the pre-filter
            footprint = None
    return StacItem(
        id=str(item.get("id")),
        when=dt,
        cloud_pct=float(cloud) if cloud is not None else None,
        boa_offset=boa_offset_for(props),
        hrefs=hrefs,
        scl=scl,
        acquisition=str(acq),
        footprint=footprint,
        properties={k: props[k] for k in ("platform", "s2:processing_baseline", "s2:mgrs_tile", "proj:epsg") if k in props},
        lattices=proj_lattices(item, [k for b, k in keys.items() if b != "SCL"], footprint, str(item.get("id"))),
    )


def _is_transient(exc: BaseException) -> bool:
    return classify(exc).transient


class StacProvider(Provider):
    """Sentinel-2 L2A from a STAC API, read as windows of cloud-optimised GeoTIFFs.

    Searches follow the STAC API item-search specification
    (https://github.com/radiantearth/stac-api-spec), with the query extension for cloud
    cover when the API offers it; pixels come from the items' COG assets by HTTP range
    requests (GDAL ``/vsicurl/``), each asset read only over the window the place needs.

    `url`: ``None``/``"earth-search"``, ``"planetary-computer"`` or a STAC API root URL.
    `collection`: the L2A collection id (default from the preset, else ``"sentinel-2-l2a"``).
    `max_items`: most items composited per composite window (least cloudy first).
    `retries`, `backoff`: retries of transient HTTP failures and the first delay in seconds
    (doubled each time, with ±50 % jitter). `timeout`: seconds per HTTP request.
    `workers`: asset reads in flight at once, over all places (I/O, not cores: threads wait
    on the network). `signing`: ``"planetary-computer"`` to sign asset URLs
    with SAS tokens from `sas_url` (set by the preset), None for public COGs.
    `cloud_mask`: mask clouds with the items' ``SCL`` asset. `resampling`: how reflectance
    assets meet the grid when they do not share its pixels. `search_limit`: most items one
    search returns. `reader`: ``"auto"`` reads COGs on the grid's own lattice with eoembed's
    range reader (:mod:`.cog_reader`: one header request per COG, each tile fetched once and
    shared by all places) and everything else with GDAL; ``"gdal"`` always uses GDAL.
    """

    name = "stac"

    def __init__(
        self,
        url: str | None = None,
        collection: str | None = None,
        *,
        max_items: int = 32,
        retries: int = 3,
        timeout: float = 30.0,
        workers: int = 32,
        backoff: float = 0.5,
        signing: str | None = "auto",
        sas_url: str | None = None,
        cloud_mask: bool = True,
        resampling: str = "bilinear",
        search_limit: int = 1000,
        reader: str = "auto",
    ) -> None:
        preset = PRESETS.get(url or "earth-search")
        if preset is None:
            if not isinstance(url, str) or urlparse(url).scheme not in ("http", "https", "file"):
                raise SpecError(
                    f"url={url!r} is not a STAC API; give 'earth-search', 'planetary-computer' or an http(s) URL"
                )
            preset = {"url": url.rstrip("/"), "collection": "sentinel-2-l2a", "signing": None}
        for name, value, lo in (("max_items", max_items, 1), ("retries", retries, 0), ("workers", workers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise SpecError(f"{name}={value!r} must be a whole number ≥ {lo}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise SpecError(f"timeout={timeout!r} must be a positive number of seconds")
        if not (isinstance(backoff, (int, float)) and backoff >= 0):
            raise SpecError(f"backoff={backoff!r} must be a number of seconds ≥ 0")
        if signing == "auto":
            signing = preset.get("signing")
        if reader not in ("auto", "gdal"):
            raise SpecError(f"reader={reader!r} must be 'auto' (eoembed's range reader where it can) or 'gdal'")
        if signing not in (None, "planetary-computer"):
            raise SpecError(f"signing={signing!r} must be None or 'planetary-computer'")
        try:
            self.resampling = Resampling[resampling]
        except KeyError as exc:
            raise SpecError(f"resampling={resampling!r} must be one of nearest, bilinear, cubic, average") from exc
        self.url: str = preset["url"]
        self.collection = collection or preset["collection"]
        self.signing = signing
        self.sas_url = (sas_url or preset.get("sas_url") or PRESETS["planetary-computer"]["sas_url"]).rstrip("/")
        self.max_items = max_items
        self.retries = retries
        self.timeout = float(timeout)
        self.workers = workers
        self.backoff = float(backoff)
        self.cloud_mask = cloud_mask
        self.search_limit = search_limit
        self._lock = threading.RLock()
        self._client: Any = None
        self._token: tuple[str, float] | None = None  # (SAS token, expiry as time.time())
        self.reader = reader
        self._datasets = DatasetPool(rasterio.open)
        self._cogs: CogReader | None = None
        self._close_http: Callable[[], None] | None = None  # the range reader's connections
        self._pool: ThreadPoolExecutor | None = None
        self._areas: deque[tuple[str, frozenset[str], list[StacItem]]] = deque(maxlen=AREA_SEARCHES)
        self._searched: OrderedDict[tuple, tuple[list[StacItem], int]] = OrderedDict()  # grid_for → fetch
        self._headers: dict[str, Lattice | None] = {}  # COG href → its lattice
        install_log_redaction("rasterio", "pystac_client")

    # -- HTTP helpers -----------------------------------------------------------------------
    @property
    def host(self) -> str:
        """The API's host (without any user:password part) for messages."""
        return urlparse(self.url).netloc.rpartition("@")[2] or redact(self.url)

    def _retry(self, what: str, call: Callable[[], T], stats: dict[str, int] | None = None) -> T:
        """`call()` with bounded retries of transient failures (exponential backoff + jitter)."""
        for attempt in range(self.retries + 1):
            try:
                return call()
            except Exception as exc:
                if attempt >= self.retries or not _is_transient(exc):
                    raise
                delay = min(self.backoff * 2**attempt * random.uniform(0.5, 1.5), 60.0)
                if stats is not None:
                    with self._lock:
                        stats["http_retries"] = stats.get("http_retries", 0) + 1
                log.info("%s failed (%s); retry %d of %d in %.2f s", what, _describe_http_error(exc),
                         attempt + 1, self.retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _open_client(self) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
            try:
                from pystac_client import Client
                from pystac_client.stac_api_io import StacApiIO
            except ImportError as exc:
                raise ProviderError(
                    "source='stac' needs pystac-client; install it with: pip install 'eoembed[stac]'"
                ) from exc
            io = StacApiIO(timeout=self.timeout, max_retries=None)
            try:
                self._client = self._retry(f"opening {self.host}", lambda: Client.open(self.url, stac_io=io))
            except Exception as exc:
                raise ProviderError(
                    f"could not open the STAC API at {redact(self.url)} ({_describe_http_error(exc)}); check the URL "
                    "and your connection, or try again later"
                ) from None
            return self._client

    def connect(self) -> None:
        """Open the API and check that it serves the collection: a batch calls this once, before
        any place, so that a wrong URL or collection is one error instead of one per place."""
        from pystac_client.conformance import ConformanceClasses

        client = self._open_client()
        if not client.conforms_to(ConformanceClasses.COLLECTIONS):
            return  # an API without collection endpoints: the search will tell
        try:
            found = self._retry(f"looking up collection {self.collection}", lambda: client.get_collection(self.collection))
        except Exception as exc:
            f = classify(exc)
            if f.transient:
                raise ProviderError(
                    f"could not look up collection {self.collection!r} at {self.host} ({f.reason()}) after "
                    f"{self.retries + 1} attempts; try again later"
                ) from None
            found = None if f.status == 404 else True
        if found is None:
            try:
                names = sorted(str(c.id) for c in client.get_collections())
            except Exception:  # noqa: BLE001 - the list only helps the message
                names = []
            shown = f" (it has {', '.join(names[:8])}{' …' if len(names) > 8 else ''})" if names else ""
            raise ProviderError(
                f"the STAC API at {redact(self.url)} has no collection {self.collection!r}{shown}; "
                "give collection= one it serves"
            )

    def _sas_token(self) -> str:
        import requests

        with self._lock:
            if self._token and self._token[1] - time.time() > 300:
                return self._token[0]
            endpoint = f"{self.sas_url}/token/{self.collection}"

            def get() -> dict[str, Any]:
                resp = requests.get(endpoint, timeout=self.timeout)
                resp.raise_for_status()
                return resp.json()

            try:
                body = self._retry("requesting a SAS token", get)
            except Exception as exc:
                raise ProviderError(
                    f"could not get a token to read {self.collection} assets from {urlparse(self.sas_url).netloc} "
                    f"({_describe_http_error(exc)}); try again later"
                ) from None
            token = str(body.get("token", "")).lstrip("?")
            expiry = time.time() + 3600
            if body.get("msft:expiry"):
                with contextlib.suppress(ValueError):
                    expiry = _parse_datetime(str(body["msft:expiry"])).timestamp()
            self._token = (token, expiry)
            return token

    def sign(self, href: str) -> str:
        """The URL GDAL opens for an asset href (signed when the catalogue needs it)."""
        if self.signing != "planetary-computer" or not href.startswith(("http://", "https://")):
            return href
        return f"{href}{'&' if '?' in href else '?'}{self._sas_token()}"

    def _gdal_env(self) -> dict[str, Any]:
        return http_gdal_env(self.timeout)

    # -- search -----------------------------------------------------------------------------
    def search(self, spatial: Any, temporal: TemporalSpec, sensor: SensorSpec,
               stats: dict[str, int] | None = None, max_items: int | None = None) -> list[StacItem]:
        """Items of the collection over `spatial` in `temporal` with cloud cover ≤ ``cloudy_pct``
        (from a prepared area search that included the place when there is one)."""
        place = spatial.shape("EPSG:4326")
        found = self._prepared_items(spatial, temporal, sensor) if max_items is None else None
        if found is not None:
            return _items_over(found, place)
        return _items_over(self._search_area(place, temporal, sensor, stats, max_items), place)

    # -- one search for many places ---------------------------------------------------------
    def prepare(self, places: Sequence[SpatialSpec], temporal: TemporalSpec, sensor: SensorSpec) -> None:
        """Search once over the union of the places' footprints; their own searches (for their
        grid and their pixels) are then answered from it, without a request each."""
        key = _search_key(temporal, sensor)
        todo = [s for s in places if self._prepared_items(s, temporal, sensor) is None]
        if len(todo) < 2:
            return
        area = shapely.union_all([s.shape("EPSG:4326") for s in todo])
        try:
            items = self._search_area(area, temporal, sensor)
        except Exception as exc:  # each place then searches (and reports) on its own
            log.debug("area search for %d places failed: %s", len(todo), _describe_http_error(exc))
            return
        if len(items) >= self.search_limit or any(it.footprint is None for it in items):
            return  # cut short, or an item the local filter cannot place: search per place
        with self._lock:
            self._areas.append((key, frozenset(s.key() for s in todo), items))

    def _prepared_items(self, spatial: Any, temporal: TemporalSpec, sensor: SensorSpec) -> list[StacItem] | None:
        """The items of a prepared area search that included this place, else None."""
        key, place = _search_key(temporal, sensor), spatial.key()
        with self._lock:
            areas = list(self._areas)
        for k, places, items in reversed(areas):
            if k == key and place in places:
                return items
        return None

    def _search_area(self, area: Any, temporal: TemporalSpec, sensor: SensorSpec,
                     stats: dict[str, int] | None = None, max_items: int | None = None) -> list[StacItem]:
        """Items over `area` (lon/lat geometry) in `temporal` with cloud cover ≤ ``cloudy_pct``."""
        client = self._open_client()
        place = area
        last = datetime.combine(temporal.end, datetime.min.time()) - timedelta(milliseconds=1)
        window = f"{temporal.start.isoformat()}T00:00:00Z/{last.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z"
        kwargs: dict[str, Any] = {
            "collections": [self.collection],
            "intersects": shapely.geometry.mapping(place),
            "datetime": window,
            "max_items": max_items or self.search_limit,
            "limit": 100,
        }
        from pystac_client.conformance import ConformanceClasses

        if client.conforms_to(ConformanceClasses.QUERY):
            kwargs["query"] = {"eo:cloud_cover": {"lte": sensor.cloudy_pct}}
        try:
            raw = self._retry(f"searching {self.host}",
                              lambda: list(client.search(**kwargs).items_as_dicts()), stats)
        except Exception as exc:
            tries = f" after {self.retries + 1} attempts" if _is_transient(exc) else ""
            raise ProviderError(
                f"the STAC search at {self.host} failed ({_describe_http_error(exc)}){tries}; check the "
                "collection and try again later, or raise retries="
            ) from None
        items = []
        for d in raw:
            it = parse_item(d)
            if it is None or not temporal.contains(it.date):
                continue
            if it.cloud_pct is not None and it.cloud_pct > sensor.cloudy_pct:
                continue
            items.append(it)
        items.sort(key=lambda i: (i.when, i.id))
        return items

    def _choose(self, items: list[StacItem], windows: Sequence[TemporalSpec]) -> list[StacItem]:
        """At most `max_items` acquisitions per window, least cloudy first, in date order."""
        chosen: dict[str, StacItem] = {}
        for win in windows:
            by_acq: dict[str, list[StacItem]] = {}
            for it in items:
                if win.contains(it.date):
                    by_acq.setdefault(it.acquisition, []).append(it)
            ranked = sorted(by_acq.values(), key=lambda g: (min(_cloud(i) for i in g), g[0].when))
            for group in ranked[: self.max_items]:
                for it in group:
                    chosen[it.id] = it
        return sorted(chosen.values(), key=lambda i: (i.when, i.id))

    # -- grid -------------------------------------------------------------------------------
    def _items_for(self, spatial: SpatialSpec, temporal: TemporalSpec, sensor: SensorSpec,
                   stats: dict[str, int] | None = None, keep: bool = False) -> list[StacItem]:
        """The search for one place and window, done once for its grid and its fetch.

        `keep`: leave the answer for the fetch that follows (grid_for); otherwise a kept answer
        is used up, so that a later fetch of the same place searches afresh.
        """
        key = (spatial.key(), temporal.key(), sensor.cloudy_pct)
        with self._lock:
            hit = self._searched.get(key) if keep else self._searched.pop(key, None)
        if hit is not None:
            if stats is not None:
                stats["http_retries"] = stats.get("http_retries", 0) + hit[1]
            return hit[0]
        own: dict[str, int] = {"http_retries": 0}
        items = self.search(spatial, temporal, sensor, own)
        if stats is not None:
            stats["http_retries"] = stats.get("http_retries", 0) + own["http_retries"]
        if keep:
            with self._lock:
                self._searched[key] = (items, own["http_retries"])
                while len(self._searched) > 256:
                    self._searched.popitem(last=False)
        return items

    def lattices(self, spatial: SpatialSpec, sensor: SensorSpec,
                 temporal: TemporalSpec | None = None) -> list[Lattice]:
        """Lattices of the items under the place's centre: their ``proj:*`` metadata, else the
        header of one band COG per MGRS tile. Without a window, the 100 latest items count.

        A failed search raises its ProviderError here: a grid never depends on a transient failure.
        """
        if temporal is None:
            items = self.search(spatial, TemporalSpec(date(1970, 1, 1), date(2100, 1, 1)), sensor, max_items=100)
        else:
            items = self._items_for(spatial, temporal, sensor, keep=True)
        centre = shapely.geometry.Point(*place_lonlat(spatial))
        out: list[Lattice] = []
        unknown: dict[str, StacItem] = {}
        for it in items:
            if it.footprint is not None and not it.footprint.intersects(centre):
                continue
            if it.lattices:
                out += it.lattices
            else:
                unknown.setdefault(str(it.properties.get("s2:mgrs_tile") or it.id), it)
        for it in unknown.values():
            lat = self._header_lattice(it, sensor)
            if lat is not None:
                out.append(lat)
        return out

    def _header_lattice(self, item: StacItem, sensor: SensorSpec) -> Lattice | None:
        """The lattice in the header of one of the item's band COGs (a 10 m band when it has one)."""
        wanted = [b for b in ("B02", "B03", "B04", "B08") if b in item.hrefs and b in (sensor.bands or (b,))]
        band = (wanted or [b for b in (sensor.bands or ()) if b in item.hrefs] or sorted(item.hrefs))[0]
        href = item.hrefs[band]
        with self._lock:
            if href in self._headers:
                return self._headers[href]

        def read() -> Lattice | None:  # the header stays known (or the COG open) for the reads that follow
            url = self.sign(href)
            head = self._cog_reader().header(href, url) if self.reader == "auto" else None
            if head is not None:
                return Lattice(crs_string(parse_crs(f"EPSG:{head.epsg}")), head.res, head.origin, item.footprint,
                               item.id)
            return self._opened(url, lambda: self._with_dataset(
                url, lambda src: header_lattice(src, item.footprint, item.id)))

        try:
            lat = self._retry(f"reading the header of band {band} of item {item.id}", read)
        except (RasterioIOError, RemoteFailure) as exc:
            f = classify(exc, href)
            tries = f" after {self.retries + 1} attempts" if f.transient else ""
            error = ProviderError if f.transient else PermanentProviderError
            raise error(
                f"could not read the header of band {band} of item {item.id} at {redact(href)} "
                f"({f.reason()}){tries}; the asset may be unavailable, try again later"
            ) from None
        with self._lock:
            self._headers[href] = lat
        return lat

    # -- reading ----------------------------------------------------------------------------
    def _opened(self, url: str, use: Callable[[], T]) -> T:
        """``use()``, with the real cause found by probing the server when GDAL hides it behind
        "not recognized as a supported file format" (a cut-short or refused open)."""
        try:
            return use()
        except RasterioIOError as exc:
            if classify(exc).cause != "not-raster" or not url.startswith(("http://", "https://")):
                raise
            raise RemoteFailure(probe(url, self.timeout)) from exc

    def read_asset(self, href: str, grid: GridSpec, resampling: Resampling, nodata: float | None,
                   stats: dict[str, int] | None = None, what: str = "asset") -> tuple[np.ndarray, np.ndarray]:
        """Band 1 of the COG at `href` on `grid` (only the window the grid needs): values, validity."""

        def read() -> tuple[np.ndarray, np.ndarray]:
            url = self.sign(href)
            if self.reader == "auto":
                got = self._cog_reader().read(href, url, grid, nodata)
                if got is not None:
                    return got[0][0], got[1]
            vals, ok = self._opened(url, lambda: self._with_dataset(
                url, lambda src: read_to_grid(src, [1], grid, resampling, nodata)))
            return vals[0], ok

        try:
            try:
                return self._retry(f"reading {what}", read, stats)
            except (RasterioIOError, RemoteFailure) as exc:
                if self.signing is None or classify(exc).status != 403:
                    raise
                with self._lock:  # a refused signature: the token may have expired early
                    self._token = None
                self._datasets.discard(lambda url: url.startswith(href))
                return self._retry(f"reading {what}", read, stats)
        except (RasterioIOError, RemoteFailure) as exc:
            f = classify(exc, href)
            tries = f" after {self.retries + 1} attempts" if f.transient else ""
            advice = ("the server kept failing; try again later or raise retries=" if f.transient
                      else "the asset is unavailable or not a GeoTIFF; check the catalogue or its access rights")
            error = ProviderError if f.transient else PermanentProviderError
            raise error(f"could not read {what} at {redact(href)} ({f.reason()}){tries}; {advice}") from None

    def _with_dataset(self, url: str, use: Callable[[Any], T]) -> T:
        """``use(dataset)`` on an open dataset of `url`, one kept open from earlier places when
        there is one; when such a dataset fails, once more on a fresh open (its signature may have
        expired, its file changed), so that what fails is reported as a fresh open reports it."""
        reused = False
        with rasterio.Env(**self._gdal_env()):
            try:
                with self._datasets.borrow(url) as (src, reused):
                    return use(src)
            except RasterioIOError:
                if not reused:
                    raise
            with self._datasets.borrow(url, fresh=True) as (src, _):
                return use(src)

    def _read_items(self, items: list[StacItem], bands: list[str], grid: GridSpec,
                    stats: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every item's bands on `grid` (assets read in parallel), cloud-masked, offset removed."""
        pool = self._executor()
        cached = self._cogs.read_cached if self.reader == "auto" and self._cogs is not None else None

        def submit(href: str, resampling: Resampling, nodata: float | None, what: str) -> Future:
            got = cached(href, grid, nodata) if cached is not None else None
            if got is not None:  # every tile already here: no request, no hand-over to a read thread
                done: Future = Future()
                done.set_result((got[0][0], got[1]))
                return done
            return pool.submit(self.read_asset, href, grid, resampling, nodata, stats, what)

        jobs = []
        for it in items:
            futs = [submit(it.hrefs[b], self.resampling, 0.0, f"band {b} of item {it.id}") for b in bands]
            scl = None
            if self.cloud_mask and it.scl:
                scl = submit(it.scl, Resampling.nearest, None, f"SCL of item {it.id}")
            jobs.append((it, futs, scl))
        out = []
        for it, futs, scl in jobs:
            vals = np.zeros((len(bands), grid.height, grid.width), np.float32)
            valid = np.ones((grid.height, grid.width), bool)
            for j, f in enumerate(futs):
                v, ok = f.result()
                vals[j] = v
                valid &= ok
            if scl is not None:
                classes, ok = scl.result()
                valid &= ok & ~np.isin(classes.astype(np.int64), SCL_INVALID)
            if it.boa_offset:
                vals -= np.float32(it.boa_offset)
            vals[:, ~valid] = 0.0
            out.append((vals, valid))
        stats["assets_read"] = sum(len(bands) + (1 if self.cloud_mask and it.scl else 0) for it in items)
        return out

    def fetch(self, request: FetchRequest) -> Observation:
        sensor, grid, temporal = request.sensor, request.grid, request.temporal
        bands = list(sensor.bands or [b for b in S2_BANDS if b not in ("B10", "SCL")])
        stats: dict[str, int] = {"http_retries": 0}
        found = self._items_for(request.spatial, temporal, sensor, stats)
        if not found:
            raise ProviderError(
                f"no {self.collection} items at {self.host} intersect the place between {temporal.start} and "
                f"{temporal.end} (end excluded) with cloud cover ≤ {sensor.cloudy_pct:g}%; widen the time "
                "window or raise cloudy_pct"
            )
        have = [i for i in found if all(b in i.hrefs for b in bands)]
        if not have:
            missing = sorted({b for b in bands for i in found if b not in i.hrefs})
            raise ProviderError(
                f"the {self.collection} items at {self.host} have no asset for band {', '.join(missing)} "
                f"(they have {', '.join(sorted(found[0].hrefs))}); choose a model or bands the collection provides"
            )
        windows = request.frames.windows(temporal) if request.frames is not None else [temporal]
        items = self._choose(have, windows)
        per_item = self._read_items(items, bands, grid, stats)
        stack_a, valid_a, when, scene_ids = _merge_acquisitions(items, per_item)
        meta: dict[str, Any] = {
            "provider": self.name,
            "url": redact(self.url),
            "collection": self.collection,
            "items": [it.id for it in items],
            "scenes": scene_ids,
            "dates": [d.isoformat() for d in when],
            "cloud_cover": {it.id: it.cloud_pct for it in items},
            "window": temporal.key(),
            "cloudy_pct": sensor.cloudy_pct,
            "composite": sensor.composite,
            "cloud_mask": "SCL" if self.cloud_mask and any(it.scl for it in items) else None,
            "items_found": len(found),
            "boa_offset_removed": {it.id: it.boa_offset for it in items if it.boa_offset},
            **stats,
        }
        empty = (f"{len(items)} {self.collection} items at {self.host} cover the place in {temporal.key()} but "
                 "none has a clear pixel there (clouds or no data); widen the window or raise cloudy_pct")
        return scenes_to_observation(stack_a, valid_a, when, bands, request, meta, "", empty=empty)

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "url": redact(self.url), "collection": self.collection, "signing": self.signing}

    @property
    def fetch_concurrency(self) -> int:
        """Places worth fetching at once: each reads a dozen assets in parallel, so an eighth of
        the reads in flight (4 places for 32) already keeps every read thread busy. More would only
        queue their reads behind those of the places inference needs first, and their Python work
        would compete with inference (measured: 4 places at once ran 5–14 % faster than 8)."""
        return max(1, -(-self.workers // 8))

    # -- long-lived resources ---------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        """The asset-read pool, made once: its threads keep GDAL's HTTP connections alive."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="eoembed-stac")
            return self._pool

    def _cog_reader(self) -> CogReader:
        """The range reader and its HTTP connections (kept alive, as many as read threads)."""
        with self._lock:
            if self._cogs is None:
                get, self._close_http = http_range_getter(self.timeout, self.workers)
                self._cogs = CogReader(get)
            return self._cogs

    def close(self) -> None:
        """Stop the read threads, close the open COGs and drop the tiles kept (the provider stays usable)."""
        with self._lock:
            pool, self._pool = self._pool, None
            close_http, self._close_http, self._cogs = self._close_http, None, None
            self._areas.clear()
        if pool is not None:
            pool.shutdown(wait=True)
        if close_http is not None:
            close_http()
        self._datasets.close()


def _search_key(temporal: TemporalSpec, sensor: SensorSpec) -> str:
    """What a search depends on besides the area: the window and the cloud limit."""
    return f"{temporal.key()}|{sensor.cloudy_pct:g}"


def _items_over(items: list[StacItem], place: Any) -> list[StacItem]:
    """The items whose footprint meets `place` (lon/lat); items without one are kept."""
    return [it for it in items if it.footprint is None or it.footprint.intersects(place)]


def _merge_acquisitions(
    items: list[StacItem], per_item: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, list[date], list[list[str]]]:
    """One layer per acquisition: the tiles of one datatake (several MGRS tiles or UTM zones)
    are merged, least cloudy first, so that a median does not count a pixel twice."""
    groups: dict[str, list[int]] = {}
    for k, it in enumerate(items):
        groups.setdefault(it.acquisition, []).append(k)
    layers = []
    for idx in groups.values():
        if len(idx) == 1:  # one tile of the datatake: its own arrays
            layers.append((items[idx[0]].date, [items[idx[0]].id], *per_item[idx[0]]))
            continue
        vals = np.zeros_like(per_item[idx[0]][0])
        ok = np.zeros_like(per_item[idx[0]][1])
        for k in sorted(idx, key=lambda k: (_cloud(items[k]), items[k].id)):
            v, m = per_item[k]
            take = m & ~ok
            vals[:, take] = v[:, take]
            ok |= take
        layers.append((items[idx[0]].date, [items[k].id for k in idx], vals, ok))
    layers.sort(key=lambda layer: (layer[0], layer[1]))
    return (
        np.stack([lay[2] for lay in layers]),
        np.stack([lay[3] for lay in layers]),
        [lay[0] for lay in layers],
        [lay[1] for lay in layers],
    )


def _cloud(item: StacItem) -> float:
    return item.cloud_pct if item.cloud_pct is not None else 100.0


def _describe_http_error(exc: BaseException) -> str:
    f = classify(exc)
    return f"{f.reason()}: {f.detail}" if f.status is not None or f.cause == "other" else f.reason()
