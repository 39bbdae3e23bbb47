"""A loopback stand-in for Google's Earth Engine REST API, for tests; run in its own process.

    python ee_server.py --catalog CATALOG.json --log LOG --ready READY [--token T ...]
                        [--sa-email E --sa-public-key PEM] [--denied-project P ...]

Only Google's server is faked: the real ``earthengine-api`` client talks to it over HTTP.
The calls it answers are exactly the ones the client and the eoembed provider make:

* ``GET /$discovery/rest?version=v1`` — a discovery document, written for these tests, that
  describes only the three methods below (the client builds its API from it).
* ``GET /v1/projects/{p}/algorithms`` — signatures of the algorithms the provider's
  expressions use (``ee.Initialize`` loads them to build ``ee.Image``, ``ee.Filter`` …).
* ``POST /v1/projects/{p}/value:compute`` — evaluates an expression (the image listing).
* ``POST /v1/projects/{p}/image:computePixels`` — evaluates an image expression on the
  request's grid and answers an ``.npy`` structured array, one float field per band. Answers
  larger than the catalogue's ``max_request_bytes`` are refused with Earth Engine's message.
* ``POST /token`` — an OAuth 2.0 token endpoint for the JWT-bearer grant of service accounts:
  the assertion's RS256 signature is verified with the public key, and a fresh access token
  is issued.
* ``POST /_faults`` — ``{"match": "computePixels", "status": 429, "count": 1, "message": …}``
  makes the next `count` API calls whose path contains `match` fail (``"echo_auth": true``
  quotes the request's Authorization header in the message); ``{"clear": true}``.
* ``GET /no-catalog.json`` — an empty catalogue of deprecated assets (the client fetches one
  from Google's storage during ``ee.Initialize``; tests point it here).

Every API call needs ``Authorization: Bearer <token>`` with a token from ``--token`` or
issued by ``/token`` (else 401, UNAUTHENTICATED); projects in ``--denied-project`` get 403.
Expressions are evaluated for real by a small interpreter of the Cloud API expression
graph (``values`` / ``result``; constants, references, arrays, dictionaries, function
invocations and definitions). Images of the catalogue are synthetic with known values::

    value(band, x, y) = base + 1000·k(band) + (x − x0)/10 + 100·(y0 − y)/10

at pixel centres (x, y) in the collection's CRS, with k the band's position in BANDS;
``SCL`` is 4 (vegetation) except 9 (cloud) inside the image's ``clouds`` rectangles.
Each request is logged as a JSON line: method, path, status, auth, user project, grid,
the algorithms the expression uses, and how many computePixels calls were in flight.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import shapely.geometry

BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]


def _sig(name: str, returns: str, *args: str) -> dict:
    out = []
    for a in args:
        n, t, *opt = a.split(":")
        out.append({"argumentName": n, "type": t, **({"optional": True} if opt else {})})
    return {"name": f"algorithms/{name}", "description": "", "returnType": returns, "arguments": out}


ALGORITHMS = [
    _sig("ImageCollection.load", "ImageCollection", "id:String", "version:Long:o"),
    _sig("Collection.filter", "FeatureCollection", "collection:FeatureCollection", "filter:Filter"),
    _sig("Collection.map", "FeatureCollection", "collection:FeatureCollection", "baseAlgorithm:Algorithm",
         "dropNulls:Boolean:o"),
    _sig("Collection.limit", "FeatureCollection", "collection:FeatureCollection", "limit:Integer:o", "key:String:o",
         "ascending:Boolean:o"),
    _sig("AggregateFeatureCollection.array", "List", "collection:FeatureCollection", "property:String"),
    _sig("DateRange", "DateRange", "start:Date", "end:Date:o", "timeZone:String:o"),
    _sig("Date", "Date", "value:Object", "timeZone:String:o"),
    _sig("Feature", "Feature", "geometry:Geometry", "metadata:Dictionary:o"),
    _sig("GeometryConstructors.Polygon", "Geometry", "coordinates:List", "crs:Projection:o", "geodesic:Boolean:o",
         "maxError:ErrorMargin:o", "evenOdd:Boolean:o"),
    _sig("Filter.dateRangeContains", "Filter", "leftField:String:o", "rightValue:Object:o", "rightField:String:o",
         "leftValue:Object:o"),
    _sig("Filter.intersects", "Filter", "leftField:String:o", "rightValue:Object:o", "rightField:String:o",
         "leftValue:Object:o", "maxError:ErrorMargin:o"),
    _sig("Filter.lessThan", "Filter", "leftField:String:o", "rightValue:Object:o", "rightField:String:o",
         "leftValue:Object:o"),
    _sig("Filter.greaterThan", "Filter", "leftField:String:o", "rightValue:Object:o", "rightField:String:o",
         "leftValue:Object:o"),
    _sig("Filter.not", "Filter", "filter:Filter"),
    _sig("Image.select", "Image", "input:Image", "bandSelectors:List", "newNames:List:o"),
    _sig("Image.constant", "Image", "value:Object"),
    _sig("Image.neq", "Image", "image1:Image", "image2:Image"),
    _sig("Image.and", "Image", "image1:Image", "image2:Image"),
    _sig("Image.updateMask", "Image", "image:Image", "mask:Image"),
    _sig("Image.unmask", "Image", "input:Image", "value:Image:o", "sameFootprint:Boolean:o"),
    _sig("Image.addBands", "Image", "dstImg:Image", "srcImg:Image", "names:List:o", "overwrite:Boolean:o"),
    _sig("Image.toFloat", "Image", "value:Image"),
    _sig("ImageCollection.mosaic", "Image", "collection:ImageCollection"),
    _sig("reduce.median", "Image", "collection:ImageCollection"),
    _sig("reduce.count", "Image", "collection:ImageCollection"),
]


def discovery(base: str) -> dict:
    """A discovery document describing only the methods the provider uses."""
    project = {"type": "string", "location": "path", "required": True, "pattern": "^projects/[^/]+$"}
    std = {
        name: {"type": t, "location": "query", **({"default": d} if d else {})}
        for name, t, d in [("alt", "string", "json"), ("prettyPrint", "boolean", "true"), ("fields", "string", None),
                           ("key", "string", None), ("quotaUser", "string", None), ("$.xgafv", "string", None),
                           ("access_token", "string", None), ("callback", "string", None),
                           ("oauth_token", "string", None), ("upload_protocol", "string", None),
                           ("uploadType", "string", None)]
    }
    return {
        "kind": "discovery#restDescription", "discoveryVersion": "v1", "id": "earthengine:v1",
        "name": "earthengine", "version": "v1", "title": "Loopback Earth Engine (tests)", "protocol": "rest",
        "rootUrl": base + "/", "servicePath": "", "baseUrl": base + "/", "batchPath": "batch",
        "parameters": std,
        "schemas": {
            "Empty": {"id": "Empty", "type": "object", "properties": {}},
            "ListAlgorithmsResponse": {"id": "ListAlgorithmsResponse", "type": "object",
                                       "properties": {"algorithms": {"type": "array", "items": {"type": "object"}}}},
            "ComputeValueRequest": {"id": "ComputeValueRequest", "type": "object",
                                    "properties": {"expression": {"type": "object"}}},
            "ComputeValueResponse": {"id": "ComputeValueResponse", "type": "object",
                                     "properties": {"result": {"type": "any"}}},
            "ComputePixelsRequest": {"id": "ComputePixelsRequest", "type": "object",
                                     "properties": {"expression": {"type": "object"}, "fileFormat": {"type": "string"},
                                                    "grid": {"type": "object"}}},
            "HttpBody": {"id": "HttpBody", "type": "object", "properties": {"data": {"type": "string"}}},
        },
        "resources": {"projects": {"resources": {
            "algorithms": {"methods": {"list": {
                "id": "earthengine.projects.algorithms.list", "path": "v1/{+parent}/algorithms",
                "flatPath": "v1/projects/{projectsId}/algorithms", "httpMethod": "GET",
                "parameters": {"parent": project}, "parameterOrder": ["parent"],
                "response": {"$ref": "ListAlgorithmsResponse"}}}},
            "value": {"methods": {"compute": {
                "id": "earthengine.projects.value.compute", "path": "v1/{+project}/value:compute",
                "flatPath": "v1/projects/{projectsId}/value:compute", "httpMethod": "POST",
                "parameters": {"project": project}, "parameterOrder": ["project"],
                "request": {"$ref": "ComputeValueRequest"}, "response": {"$ref": "ComputeValueResponse"}}}},
            "image": {"methods": {"computePixels": {
                "id": "earthengine.projects.image.computePixels", "path": "v1/{+project}/image:computePixels",
                "flatPath": "v1/projects/{projectsId}/image:computePixels", "httpMethod": "POST",
                "parameters": {"project": project}, "parameterOrder": ["project"],
                "request": {"$ref": "ComputePixelsRequest"}, "response": {"$ref": "HttpBody"}}}},
        }}},
    }


class EEError(Exception):
    def __init__(self, code: int, message: str, status: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


# ------------------------------------------------------------------------------ images
class Ctx:
    """The pixel grid an image is rendered on: pixel-centre coordinates in the request CRS."""

    def __init__(self, grid: dict) -> None:
        at = grid["affineTransform"]
        w, h = int(grid["dimensions"]["width"]), int(grid["dimensions"]["height"])
        cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        self.x = at.get("translateX", 0) + at.get("scaleX", 1) * cols + at.get("shearX", 0) * rows
        self.y = at.get("translateY", 0) + at.get("shearY", 0) * cols + at.get("scaleY", -1) * rows
        self.shape = (h, w)
        self.affine = at
        self.crs = grid.get("crsCode")
        self.memo: dict[int, tuple[dict, dict]] = {}


class Img:
    """A lazily rendered image: band names, properties and a render(ctx) → (values, masks)."""

    def __init__(self, bands: list[str], render, props: dict | None = None, footprint=None) -> None:
        self.bands, self._render, self.props, self.footprint = list(bands), render, dict(props or {}), footprint

    def render(self, ctx: Ctx) -> tuple[dict, dict]:
        if id(self) not in ctx.memo:
            ctx.memo[id(self)] = self._render(ctx)
        return ctx.memo[id(self)]


def source_image(col: dict, im: dict) -> Img:
    x0, y0 = col["x0"], col["y0"]
    t = datetime.fromisoformat(im["time"].replace("Z", "+00:00"))

    def render(ctx: Ctx):
        if ctx.crs and ctx.crs != col["crs"]:
            raise EEError(400, f"this test server renders {col['crs']} only, not {ctx.crs}")
        base = im["base"] + (ctx.x - x0) / 10 + 100 * (y0 - ctx.y) / 10
        vals = {b: base + 1000 * k for k, b in enumerate(BANDS)}
        scl = np.full(ctx.shape, 4.0)
        for cx0, cy0, cx1, cy1 in im.get("clouds", []):
            scl[(ctx.x >= cx0) & (ctx.x < cx1) & (ctx.y >= cy0) & (ctx.y < cy1)] = 9
        vals["SCL"] = scl
        return vals, {b: np.ones(ctx.shape, bool) for b in vals}

    props = {"system:index": im["id"], "system:time_start": int(t.timestamp() * 1000),
             "CLOUDY_PIXEL_PERCENTAGE": im["cloud"]}
    return Img(BANDS + ["SCL"], render, props, shapely.geometry.box(*im["bbox"]))


def tile_image(im: dict) -> Img:
    """An image read from a GeoTIFF the tests wrote (an AlphaEarth-like int8 tile, nodata −128):
    de-quantised and warped (nearest) onto the request grid, as Earth Engine would serve it."""
    import rasterio
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    t = datetime.fromisoformat(im["time"].replace("Z", "+00:00"))
    bands = [f"A{i:02d}" for i in range(64)]

    def render(ctx: Ctx):
        at = ctx.affine
        dst_t = Affine(at.get("scaleX", 1), at.get("shearX", 0), at.get("translateX", 0),
                       at.get("shearY", 0), at.get("scaleY", -1), at.get("translateY", 0))
        out = np.full((64, *ctx.shape), np.nan, np.float32)
        with rasterio.open(im["file"]) as src:
            raw = src.read().astype(np.float32)
            raw[raw == -128] = np.nan
            reproject(raw, out, src_transform=src.transform, src_crs=src.crs, src_nodata=np.nan,
                      dst_transform=dst_t, dst_crs=ctx.crs, dst_nodata=np.nan, resampling=Resampling.nearest)
        ok = ~np.isnan(out).any(axis=0)
        vals = np.sign(out) * (np.abs(out) / 127.5) ** 2
        return ({b: np.nan_to_num(vals[i]).astype(np.float64) for i, b in enumerate(bands)},
                {b: ok for b in bands})

    props = {"system:index": im["id"], "system:time_start": int(t.timestamp() * 1000), "_float32": True}
    return Img(bands, render, props, shapely.geometry.box(*im["bbox"]))


def _as_img(v) -> Img:
    if isinstance(v, Img):
        return v
    return constant(v)


def constant(value) -> Img:
    return Img(["constant"], lambda ctx: ({"constant": np.full(ctx.shape, float(value))},
                                          {"constant": np.ones(ctx.shape, bool)}))


def _binary(a: Img, b: Img, op) -> Img:
    a, b = _as_img(a), _as_img(b)
    if len(b.bands) not in (1, len(a.bands)):
        raise EEError(400, "Image.binaryOp: images must have the same number of bands or one band")

    def render(ctx):
        av, am = a.render(ctx)
        bv, bm = b.render(ctx)
        out, mask = {}, {}
        for i, name in enumerate(a.bands):
            other = b.bands[0] if len(b.bands) == 1 else b.bands[i]
            out[name] = op(av[name], bv[other]).astype(float)
            mask[name] = am[name] & bm[other]
        return out, mask

    return Img(a.bands, render, a.props)


def select(input: Img, bandSelectors, newNames=None) -> Img:
    chosen = []
    for sel in bandSelectors:
        if isinstance(sel, int):
            chosen.append(input.bands[sel])
            continue
        hits = [b for b in input.bands if re.fullmatch(str(sel), b)]
        if not hits:
            raise EEError(400, f"Image.select: Band pattern '{sel}' did not match any bands. "
                               f"Available bands: [{', '.join(input.bands)}]")
        chosen += hits
    names = list(newNames) if newNames else chosen

    def render(ctx):
        v, m = input.render(ctx)
        return {n: v[c] for n, c in zip(names, chosen)}, {n: m[c] for n, c in zip(names, chosen)}

    return Img(names, render, input.props, input.footprint)


def update_mask(image: Img, mask: Img) -> Img:
    mask = _as_img(mask)

    def render(ctx):
        v, m = image.render(ctx)
        mv, mm = mask.render(ctx)
        out = {}
        for i, b in enumerate(image.bands):
            mb = mask.bands[0] if len(mask.bands) == 1 else mask.bands[i]
            out[b] = m[b] & mm[mb] & (mv[mb] != 0)
        return v, out

    return Img(image.bands, render, image.props, image.footprint)


def unmask(input: Img, value=None, sameFootprint=True) -> Img:
    fill = _as_img(0 if value is None else value)

    def render(ctx):
        v, m = input.render(ctx)
        fv, _ = fill.render(ctx)
        f = fv[fill.bands[0]]
        return ({b: np.where(m[b], v[b], f) for b in input.bands}, {b: np.ones(ctx.shape, bool) for b in input.bands})

    return Img(input.bands, render, input.props, input.footprint)


def add_bands(dstImg: Img, srcImg: Img, names=None, overwrite=False) -> Img:
    def render(ctx):
        dv, dm = dstImg.render(ctx)
        sv, sm = srcImg.render(ctx)
        return {**dv, **sv}, {**dm, **sm}

    return Img(dstImg.bands + [b for b in srcImg.bands if b not in dstImg.bands], render, dstImg.props)


def to_float(value: Img) -> Img:
    img = Img(value.bands, value.render, value.props, value.footprint)
    img.props["_float32"] = True
    return img


def _reduce(collection: list[Img], how: str) -> Img:
    if not collection:
        return Img([], lambda ctx: ({}, {}))
    bands = collection[0].bands

    def render(ctx):
        rendered = [im.render(ctx) for im in collection]
        out, mask = {}, {}
        for b in bands:
            vals = np.stack([r[0][b] for r in rendered])
            ok = np.stack([r[1][b] for r in rendered])
            if how == "count":
                out[b] = ok.sum(axis=0).astype(float)
                mask[b] = np.ones(ctx.shape, bool)
            elif how == "median":
                with np.errstate(all="ignore"):
                    med = np.nanmedian(np.where(ok, vals, np.nan), axis=0) if ok.any() else np.zeros(ctx.shape)
                out[b] = np.nan_to_num(med)
                mask[b] = ok.any(axis=0)
            else:  # mosaic: the last image on top
                top = np.zeros(ctx.shape)
                for k in range(len(rendered)):
                    top = np.where(ok[k], vals[k], top)
                out[b] = top
                mask[b] = ok.any(axis=0)
        return out, mask

    return Img(bands, render)


class Server:
    def __init__(self, args) -> None:
        self.catalog = json.loads(Path(args.catalog).read_text())
        self.log_path = Path(args.log)
        self.tokens = set(args.token or [])
        self.denied = set(args.denied_project or [])
        self.sa_email = args.sa_email
        self.sa_key = None
        if args.sa_public_key:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            self.sa_key = load_pem_public_key(Path(args.sa_public_key).read_bytes())
        self.faults: list[dict] = []
        self.lock = threading.Lock()
        self.inflight = 0
        self.base = ""

    def log(self, rec: dict) -> None:
        with self.lock, open(self.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    # -- interpreter ------------------------------------------------------------------------
    def evaluate(self, expression: dict, used: list[str]):
        values = expression["values"]

        def ev(node, scope):
            if "constantValue" in node:
                return node["constantValue"]
            if "integerValue" in node:
                return int(node["integerValue"])
            if "valueReference" in node:
                return ev(values[node["valueReference"]], scope)
            if "argumentReference" in node:
                return scope[node["argumentReference"]]
            if "arrayValue" in node:
                return [ev(v, scope) for v in node["arrayValue"].get("values", [])]
            if "dictionaryValue" in node:
                return {k: ev(v, scope) for k, v in node["dictionaryValue"].get("values", {}).items()}
            if "functionDefinitionValue" in node:
                fd = node["functionDefinitionValue"]
                names = fd.get("argumentNames", [])
                return lambda *a: ev(values[fd["body"]], {**scope, **dict(zip(names, a))})
            if "functionInvocationValue" in node:
                fi = node["functionInvocationValue"]
                name = fi.get("functionName")
                if name is None:
                    raise EEError(400, "function references are not supported by this test server")
                used.append(name)
                args = {k: ev(v, scope) for k, v in fi.get("arguments", {}).items()}
                return self.call(name, args)
            raise EEError(400, f"unknown expression node {sorted(node)}")

        return ev(values[expression["result"]], {})

    def call(self, name: str, a: dict):
        def field_of(img: Img, f: str):
            if f == ".all":
                return img.footprint
            return img.props.get(f)

        def ms(v):
            if isinstance(v, (int, float)):
                return int(v)
            dt = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
            return int((dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp() * 1000)

        if name == "ImageCollection.load":
            col = self.catalog["collections"].get(a["id"])
            if col is None:
                raise EEError(400, f"ImageCollection.load: ImageCollection asset '{a['id']}' not found "
                                   "(does not exist or caller does not have access).", "NOT_FOUND")
            if col.get("kind") == "tiles":
                return [tile_image(im) for im in col["images"]]
            return [source_image(col, im) for im in col["images"]]
        if name == "Collection.filter":
            return [im for im in a["collection"] if a["filter"](im)]
        if name == "Collection.map":
            return [a["baseAlgorithm"](im) for im in a["collection"]]
        if name == "Collection.limit":
            out = list(a["collection"])
            if a.get("key"):
                out.sort(key=lambda im: im.props.get(a["key"]), reverse=a.get("ascending") is False)
            return out[: a["limit"]] if a.get("limit") is not None else out
        if name == "AggregateFeatureCollection.array":
            return [im.props.get(a["property"]) for im in a["collection"]]
        if name == "Date":
            return ms(a["value"])
        if name == "DateRange":
            return (ms(a["start"]), ms(a["end"]) if a.get("end") is not None else ms(a["start"]) + 1)
        if name == "GeometryConstructors.Polygon":
            return shapely.geometry.Polygon(a["coordinates"][0], a["coordinates"][1:])
        if name == "Feature":
            return {"geometry": a["geometry"]}
        if name == "Filter.dateRangeContains":
            lo, hi = a["leftValue"]
            return lambda im: lo <= field_of(im, a["rightField"]) < hi
        if name == "Filter.intersects":
            geom = a["rightValue"]["geometry"]
            return lambda im: im.footprint is not None and im.footprint.intersects(geom)
        if name == "Filter.lessThan":
            return lambda im: field_of(im, a["leftField"]) < a["rightValue"]
        if name == "Filter.greaterThan":
            return lambda im: field_of(im, a["leftField"]) > a["rightValue"]
        if name == "Filter.not":
            return lambda im: not a["filter"](im)
        if name == "Image.select":
            return select(a["input"], a["bandSelectors"], a.get("newNames"))
        if name == "Image.constant":
            return constant(a["value"])
        if name == "Image.neq":
            return _binary(a["image1"], a["image2"], lambda x, y: x != y)
        if name == "Image.and":
            return _binary(a["image1"], a["image2"], lambda x, y: (x != 0) & (y != 0))
        if name == "Image.updateMask":
            return update_mask(a["image"], a["mask"])
        if name == "Image.unmask":
            return unmask(a["input"], a.get("value"), a.get("sameFootprint", True))
        if name == "Image.addBands":
            return add_bands(a["dstImg"], a["srcImg"], a.get("names"), a.get("overwrite", False))
        if name == "Image.toFloat":
            return to_float(a["value"])
        if name == "reduce.median":
            return _reduce(a["collection"], "median")
        if name == "reduce.count":
            return _reduce(a["collection"], "count")
        if name == "ImageCollection.mosaic":
            return _reduce(a["collection"], "mosaic")
        raise EEError(400, f"Unknown algorithm {name}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    srv: Server

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: bytes, ctype: str, rec: dict) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        rec.update(status=status, t1=time.time())
        self.srv.log(rec)

    def _error(self, code: int, message: str, status: str, rec: dict) -> None:
        body = json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()
        self._reply(code, body, "application/json", rec)

    def _auth(self) -> str:
        h = self.headers.get("Authorization", "")
        if not h:
            return "missing"
        return "valid" if h.startswith("Bearer ") and h[7:] in self.srv.tokens else "invalid"

    def _fault(self, path: str, rec: dict) -> bool:
        with self.srv.lock:
            hit = next((f for f in self.srv.faults if f["count"] > 0 and f["match"] in path), None)
            if hit:
                hit["count"] -= 1
        if hit:
            message = hit.get("message", "injected failure")
            if hit.get("echo_auth"):  # a careless backend quoting the request's credentials
                message += f" (request had Authorization: {self.headers.get('Authorization')})"
            self._error(hit["status"], message, hit.get("status_text", "UNAVAILABLE"), rec)
        return bool(hit)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        rec = {"method": "GET", "path": url.path, "auth": self._auth(), "t0": time.time()}
        if url.path == "/no-catalog.json":  # the client's catalogue of deprecated assets
            self._reply(200, b'{"links": []}', "application/json", rec)
            return
        if url.path == "/$discovery/rest":
            self._reply(200, json.dumps(discovery(self.srv.base)).encode(), "application/json", rec)
            return
        m = re.fullmatch(r"/v1/projects/([^/]+)/algorithms", url.path)
        if m and self._api_checks(m.group(1), url.path, rec):
            self._reply(200, json.dumps({"algorithms": ALGORITHMS}).encode(), "application/json", rec)
        elif not m:
            self._error(404, f"{url.path} not found", "NOT_FOUND", rec)

    def _api_checks(self, project: str, path: str, rec: dict) -> bool:
        rec["project"] = project
        rec["user_project"] = self.headers.get("X-Goog-User-Project")
        if rec["auth"] != "valid":
            self._error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                             "cookie or other valid authentication credential.", "UNAUTHENTICATED", rec)
            return False
        if project in self.srv.denied:
            self._error(403, f"Earth Engine API has not been used in project {project} before or it is disabled.",
                        "PERMISSION_DENIED", rec)
            return False
        return not self._fault(path, rec)

    def do_POST(self) -> None:
        url = urlparse(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        rec = {"method": "POST", "path": url.path, "auth": self._auth(), "t0": time.time()}
        if url.path == "/_faults":
            body = json.loads(raw or b"{}")
            with self.srv.lock:
                if body.get("clear"):
                    self.srv.faults.clear()
                else:
                    self.srv.faults.append(body)
            self._reply(200, b"{}", "application/json", rec)
            return
        if url.path == "/token":
            self._token(raw, rec)
            return
        m = re.fullmatch(r"/v1/projects/([^/]+)/(value:compute|image:computePixels)", url.path)
        if not m:
            self._error(404, f"{url.path} not found", "NOT_FOUND", rec)
            return
        if not self._api_checks(m.group(1), url.path, rec):
            return
        body = json.loads(raw or b"{}")
        used: list[str] = []
        rec["functions"] = used
        try:
            if m.group(2) == "value:compute":
                result = self.srv.evaluate(body["expression"], used)
                self._reply(200, json.dumps({"result": result}, default=str).encode(), "application/json", rec)
            else:
                self._compute_pixels(body, used, rec)
        except EEError as e:
            self._error(e.code, e.message, e.status, rec)

    def _compute_pixels(self, body: dict, used: list[str], rec: dict) -> None:
        with self.srv.lock:
            self.srv.inflight += 1
            rec["inflight"] = self.srv.inflight
        try:
            grid = body["grid"]
            rec["grid"] = grid
            rec["fileFormat"] = body.get("fileFormat")
            if body.get("fileFormat") != "NPY":
                raise EEError(400, f"this test server answers NPY only, not {body.get('fileFormat')}")
            img = self.srv.evaluate(body["expression"], used)
            if not isinstance(img, Img):
                raise EEError(400, "computePixels: the expression is not an image")
            if not img.bands:
                raise EEError(400, "Image.select: Image has no bands.")
            ctx = Ctx(grid)
            h, w = ctx.shape
            itemsize = 4 if img.props.get("_float32") else 8
            size = h * w * len(img.bands) * itemsize
            limit = int(self.srv.catalog.get("max_request_bytes", 48 * 1024 * 1024))
            if size > limit:
                raise EEError(400, f"Total request size ({size} bytes) must be less than or equal to {limit} bytes.")
            vals, _ = img.render(ctx)
            dtype = np.float32 if itemsize == 4 else np.float64
            arr = np.zeros((h, w), dtype=[(b, dtype) for b in img.bands])
            for b in img.bands:
                arr[b] = vals[b]
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            time.sleep(float(self.srv.catalog.get("delay", 0)))
            self._reply(200, buf.getvalue(), "application/octet-stream", rec)
        finally:
            with self.srv.lock:
                self.srv.inflight -= 1

    def _token(self, raw: bytes, rec: dict) -> None:
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        assertion = form.get("assertion", "")
        try:
            head, payload, sig = assertion.split(".")
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding

            self.srv.sa_key.verify(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)),
                                   f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
            ok = (form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer"
                  and claims.get("iss") == self.srv.sa_email
                  # google-auth addresses the assertion to Google's token endpoint, as Google expects
                  and claims.get("aud") in ("https://oauth2.googleapis.com/token", self.srv.base + "/token"))
        except Exception as exc:
            ok = False
            rec["why"] = repr(exc)
        rec["grant"] = "valid" if ok else "invalid"
        if not ok:
            rec["claims"] = {k: v for k, v in locals().get("claims", {}).items() if k in ("iss", "aud", "scope")}
        if not ok:
            self._reply(400, json.dumps({"error": "invalid_grant", "error_description": "bad assertion"}).encode(),
                        "application/json", rec)
            return
        token = "ya29.loopback-" + secrets.token_urlsafe(16)
        self.srv.tokens.add(token)
        rec["issued"] = token  # for the tests' secret-hygiene checks
        self._reply(200, json.dumps({"access_token": token, "expires_in": 3600, "token_type": "Bearer"}).encode(),
                    "application/json", rec)


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--ready", required=True, type=Path)
    ap.add_argument("--token", action="append")
    ap.add_argument("--denied-project", action="append")
    ap.add_argument("--sa-email")
    ap.add_argument("--sa-public-key")
    args = ap.parse_args()
    srv = Server(args)
    Handler.srv = srv
    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    srv.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    tmp = args.ready.with_suffix(".tmp")
    tmp.write_text(str(httpd.server_address[1]))
    os.replace(tmp, args.ready)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
