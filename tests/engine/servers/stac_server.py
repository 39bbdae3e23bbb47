"""A small STAC API and COG file server on 127.0.0.1 for tests, run in its own process.

    python stac_server.py --root DIR --log LOG --ready READY [--sas-secret S] [--latency-ms MS]

`DIR/catalog.json` holds ``{"collections": [...], "items": [...]}`` in which the text
``{base}`` stands for this server's root URL; `DIR/data/` holds the files served under
``/data/``. The server answers:

* ``GET /`` (landing page), ``GET /conformance``, ``GET /collections[/<id>]``;
* ``GET|POST /search`` — collections, bbox, intersects, datetime, ``query`` (lt/lte/gt/gte/eq),
  ``limit`` with POST ``next`` links (``token`` = offset) for paging;
* ``GET|HEAD /data/<file>`` — with single and multiple byte ranges (206 / multipart);
  with ``--sas-secret`` a data request without ``sig=<secret>`` in its query is refused (403);
* ``GET /sas/token/<collection>`` — a Planetary-Computer-style SAS token;
* ``POST /_faults`` — ``{"match": "<path prefix>", "status": 500, "count": 2}``: the next
  `count` requests whose path starts with `match` get `status` (429 with ``Retry-After: 0``);
  ``{"clear": true}`` drops the faults not used up (and any fault rate and its counts);
* ``POST /_faults`` — ``{"rate": 0.15, "kinds": ["500", "timeout", ...], "seed": 1, "match": "/",
  "delay": 2.0}``: from now on each request whose path starts with `match` fails with
  probability `rate`, its kind drawn from `kinds`: an HTTP status (``"429"``, ``"500"``,
  ``"502"``, ``"503"``, …), ``"timeout"`` (no answer for `delay` seconds, then the connection is
  dropped), ``"reset"`` (the connection is reset, no answer) or ``"short"`` (the headers promise
  the whole body, half of it comes, then the connection closes). ``{"rate": 0}`` stops it.
  ``GET /_faults`` returns how many faults of each kind were injected.
* ``GET /_stats`` — requests answered so far by kind: ``search`` (``/search``), ``catalog``
  (landing page, conformance, collections), ``token``, ``cog_head`` (HEAD of a file),
  ``cog_header`` (a file read from byte 0: its header), ``tile_read`` (any other range of a file);
  ``POST /_stats`` with ``{"reset": true}`` returns them and starts counting afresh.

``--latency-ms`` delays every answer (not those of ``/_faults`` and ``/_stats``) by that many
milliseconds, as a distant server would.

Every request is logged as one JSON line (method, path, query, range, status, bytes) to LOG.
The port is chosen by the OS and written to READY once the server listens. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import struct
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import shapely.geometry

CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/collections",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
]


def _dt(text: str | None) -> datetime | None:
    if text in (None, "", ".."):
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _match_query(props: dict, query: dict) -> bool:
    ops = {
        "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b, "eq": lambda a, b: a == b, "neq": lambda a, b: a != b,
    }
    for name, conds in query.items():
        if name not in props:
            return False
        for op, value in conds.items():
            if not ops[op](props[name], value):
                return False
    return True


def request_kind(rec: dict) -> str:
    """What a logged request was for: search, catalog, token, cog_head, cog_header or tile_read."""
    path = rec.get("path", "")
    if path.startswith("/data/"):
        if rec.get("method") == "HEAD":
            return "cog_head"
        rng = rec.get("range") or ""
        return "cog_header" if not rng or rng.startswith("bytes=0-") else "tile_read"
    if path.startswith("/search"):
        return "search"
    if path.startswith("/sas/"):
        return "token"
    if path.startswith("/_"):
        return "control"
    return "catalog"


class State:
    def __init__(self, root: Path, log: Path, sas_secret: str | None) -> None:
        self.root = root
        self.log_path = log
        self.sas_secret = sas_secret
        self.catalog_text = (root / "catalog.json").read_text()
        self.base = ""
        self.faults: list[dict] = []
        self.latency_s = 0.0
        self.kinds: dict[str, int] = {}
        self.rate: dict = {"rate": 0.0}
        self.rng = random.Random(0)
        self.injected: dict[str, int] = {}
        self.lock = threading.Lock()

    def catalog(self) -> dict:
        return json.loads(self.catalog_text.replace("{base}", self.base))

    def log(self, rec: dict) -> None:
        kind = request_kind(rec)
        with self.lock, open(self.log_path, "a") as f:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            f.write(json.dumps({**rec, "kind": kind}) + "\n")

    def fault_for(self, path: str) -> int | str | None:
        """The fault this request gets: a status, a kind of broken connection, or None."""
        with self.lock:
            for f in self.faults:
                if f["count"] > 0 and path.startswith(f["match"]):
                    f["count"] -= 1
                    return int(f["status"])
            r = self.rate
            if r["rate"] > 0 and path.startswith(r.get("match", "/")) and self.rng.random() < r["rate"]:
                kind = str(self.rng.choice(r["kinds"]))
                self.injected[kind] = self.injected.get(kind, 0) + 1
                return int(kind) if kind.isdigit() else kind
        return None

    def set_faults(self, body: dict) -> None:
        with self.lock:
            if body.get("clear"):
                self.faults.clear()
                self.rate = {"rate": 0.0}
                self.injected = {}
            elif "rate" in body:
                self.rate = {"rate": float(body["rate"]), "kinds": list(body.get("kinds") or ["500"]),
                             "match": body.get("match", "/"), "delay": float(body.get("delay", 2.0))}
                self.rng = random.Random(body.get("seed", 0))
                self.injected = {}
            else:
                self.faults.append({"match": body["match"], "status": body["status"], "count": body["count"]})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client that hung up early
        pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY the body would wait for the
    # client's delayed ACK (~40 ms a request on Linux), a latency no real server adds
    disable_nagle_algorithm = True
    state: State

    def log_message(self, *args) -> None:  # quiet; the JSON log is the record
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None,
              head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if getattr(self, "_short", False):
            self._short = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self._reset()
            return
        if not head:
            self.wfile.write(body)
        url = urlparse(self.path)
        self.state.log({
            "method": self.command, "path": url.path, "query": url.query,
            "range": self.headers.get("Range"), "status": status, "bytes": 0 if head else len(body),
        })

    def _json(self, obj: dict, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode())

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}") if n else {}

    def _fault(self, path: str, head: bool = False) -> bool:
        status = self.state.fault_for(path)
        if status is None:
            return False
        if isinstance(status, str):
            return self._broken(status, path, head)
        headers = {"Retry-After": "0"} if status == 429 else {}
        self._send(status, json.dumps({"code": status, "description": "injected failure"}).encode(),
                   headers=headers, head=head)
        return True

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok and self.state.latency_s > 0 and not self.path.startswith("/_"):
            time.sleep(self.state.latency_s)  # a distant server: every answer comes this much later
        return ok

    def _stats(self) -> bool:
        """``/_stats``: the counts of requests by kind (GET) or a reset (POST); True when handled."""
        if urlparse(self.path).path != "/_stats":
            return False
        reset = self.command == "POST" and self._body().get("reset")
        with self.state.lock:
            counts = dict(self.state.kinds)
            if reset:
                self.state.kinds.clear()
        body = json.dumps(counts).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return True

    def _broken(self, kind: str, path: str, head: bool) -> bool:
        """A connection that fails without an HTTP status; True when no answer follows.

        ``timeout``: no answer for `delay` seconds, then a reset; ``reset``: a reset at once;
        ``short``: the real answer is prepared but only half its body is sent (see :meth:`_send`).
        """
        self.state.log({"method": self.command, "path": path, "fault": kind})
        self.close_connection = True
        if kind == "short" and not head:
            self._short = True
            return False
        if kind == "timeout":
            time.sleep(self.state.rate.get("delay", 2.0))
        self._reset()
        return True

    def _reset(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    # -- verbs ------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        if not self._stats():
            self._route()

    def do_POST(self) -> None:
        if self._stats():
            return
        url = urlparse(self.path)
        body = self._body()
        if url.path == "/_faults":
            self.state.set_faults(body)
            self._json({"ok": True})
            return
        if self._fault(url.path):
            return
        if url.path == "/search":
            self._search(body)
        else:
            self._json({"code": 404, "description": "not found"}, 404)

    def _route(self, head: bool = False) -> None:
        url = urlparse(self.path)
        path = url.path.rstrip("/") or "/"
        if path == "/_faults":
            with self.state.lock:
                counts = dict(self.state.injected)
            self._json(counts)
            return
        if self._fault(path, head):
            return
        st = self.state
        if path.startswith("/data/"):
            self._file(path[len("/data/"):], parse_qs(url.query), head)
            return
        cat = st.catalog()
        if path == "/":
            self._json({
                "type": "Catalog", "id": "loopback-stac", "stac_version": "1.0.0",
                "description": "test STAC API", "conformsTo": CONFORMS,
                "links": [
                    {"rel": "self", "href": st.base + "/", "type": "application/json"},
                    {"rel": "root", "href": st.base + "/", "type": "application/json"},
                    {"rel": "conformance", "href": st.base + "/conformance"},
                    {"rel": "data", "href": st.base + "/collections"},
                    {"rel": "search", "href": st.base + "/search", "method": "GET", "type": "application/geo+json"},
                    {"rel": "search", "href": st.base + "/search", "method": "POST", "type": "application/geo+json"},
                ],
            })
        elif path == "/conformance":
            self._json({"conformsTo": CONFORMS})
        elif path == "/collections":
            self._json({"collections": cat["collections"], "links": []})
        elif path.startswith("/collections/"):
            cid = path.split("/")[2]
            found = [c for c in cat["collections"] if c["id"] == cid]
            self._json(found[0]) if found else self._json({"code": 404}, 404)
        elif path == "/search":
            q = parse_qs(url.query)
            body: dict = {k: v[0] for k, v in q.items()}
            for key in ("collections", "ids"):
                if key in body:
                    body[key] = body[key].split(",")
            if "bbox" in body:
                body["bbox"] = [float(v) for v in body["bbox"].split(",")]
            for key in ("intersects", "query"):
                if key in body:
                    body[key] = json.loads(body[key])
            self._search(body)
        elif path.startswith("/sas/token/"):
            secret = st.sas_secret or "none"
            self._json({"msft:expiry": "2099-01-01T00:00:00Z", "token": f"st=2020&se=2099&sp=rl&sig={secret}"})
        else:
            self._json({"code": 404, "description": f"{path} not found"}, 404)

    def _search(self, body: dict) -> None:
        st = self.state
        items = st.catalog()["items"]
        cols = body.get("collections")
        if cols:
            items = [i for i in items if i.get("collection") in cols]
        if body.get("ids"):
            items = [i for i in items if i["id"] in body["ids"]]
        geom = None
        if body.get("intersects"):
            geom = shapely.geometry.shape(body["intersects"])
        elif body.get("bbox"):
            geom = shapely.geometry.box(*body["bbox"][:4])
        if geom is not None:
            items = [i for i in items if shapely.geometry.shape(i["geometry"]).intersects(geom)]
        if body.get("datetime"):
            text = body["datetime"]
            a, b = (text.split("/") + [None])[:2] if "/" in text else (text, text)
            lo, hi = _dt(a), _dt(b)
            items = [
                i for i in items
                if (lo is None or _dt(i["properties"]["datetime"]) >= lo)
                and (hi is None or _dt(i["properties"]["datetime"]) <= hi)
            ]
        if body.get("query"):
            items = [i for i in items if _match_query(i["properties"], body["query"])]
        limit = int(body.get("limit") or 10)
        offset = int(body.get("token") or 0)
        page = items[offset: offset + limit]
        links = [{"rel": "root", "href": st.base + "/"}]
        if offset + limit < len(items):
            nxt = {k: v for k, v in body.items()}
            nxt["token"] = str(offset + limit)
            links.append({"rel": "next", "href": st.base + "/search", "method": "POST", "body": nxt, "merge": False})
        self._json({
            "type": "FeatureCollection", "features": page, "links": links,
            "numberMatched": len(items), "numberReturned": len(page),
        })

    def _file(self, name: str, query: dict, head: bool) -> None:
        st = self.state
        if st.sas_secret is not None and query.get("sig", [None])[0] != st.sas_secret:
            self._send(403, b"AuthenticationFailed: signature missing or wrong", "text/plain", head=head)
            return
        path = (st.root / "data" / name).resolve()
        if not str(path).startswith(str((st.root / "data").resolve())) or not path.is_file():
            self._send(404, b"no such file", "text/plain", head=head)
            return
        data = path.read_bytes()
        size = len(data)
        rng = self.headers.get("Range")
        if not rng or not rng.startswith("bytes="):
            self._send(200, data, "image/tiff", {"Accept-Ranges": "bytes"}, head=head)
            return
        spans = []
        for part in rng[len("bytes="):].split(","):
            a, _, b = part.strip().partition("-")
            if a == "":
                start, end = max(0, size - int(b)), size - 1
            else:
                start, end = int(a), min(int(b) if b else size - 1, size - 1)
            if start >= size or start > end:
                self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"}, head=head)
                return
            spans.append((start, end))
        if len(spans) == 1:
            start, end = spans[0]
            self._send(206, data[start:end + 1], "image/tiff",
                       {"Content-Range": f"bytes {start}-{end}/{size}", "Accept-Ranges": "bytes"}, head=head)
            return
        boundary = "eoembedboundary"
        chunks = []
        for start, end in spans:
            chunks.append(
                f"--{boundary}\r\nContent-Type: image/tiff\r\nContent-Range: bytes {start}-{end}/{size}\r\n\r\n".encode()
                + data[start:end + 1] + b"\r\n"
            )
        chunks.append(f"--{boundary}--\r\n".encode())
        self._send(206, b"".join(chunks), f"multipart/byteranges; boundary={boundary}", head=head)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--log", required=True, type=Path)
    ap.add_argument("--ready", required=True, type=Path)
    ap.add_argument("--sas-secret", default=None)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    args = ap.parse_args()
    state = State(args.root, args.log, args.sas_secret)
    state.latency_s = max(0.0, args.latency_ms) / 1000.0
    Handler.state = state
    server = Server(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    tmp = args.ready.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    os.replace(tmp, args.ready)
    server.serve_forever()


if __name__ == "__main__":
    main()
