"""`layerseek serve`: an index over HTTP (FastAPI) and a web page to search it by dropping an image.

    GET  /                 the page
    GET  /health           status, image count, method
    POST /search           multipart field `file` (an image), ?top=K&qe=K&verify=N  ->  ranked matches
    GET  /images/{id}      the catalogued file itself            (nothing outside the catalog)
    GET  /thumbnails/{id}  a JPEG thumbnail, ?size=64..1024
    POST /images           multipart field `file`: store the upload in the index and index it   (token)
    DELETE /images/{id}    forget an image (an uploaded copy is deleted too)                     (token)

Adding and removing need `Authorization: Bearer <token>` with the token from the environment
variable LAYERSEEK_TOKEN; without it those two routes answer 403. The OpenAPI docs are at /docs.

What the server will do for a client is bounded:
- a request body larger than the upload limit is refused (413) while it streams, chunked or not,
  before it reaches the disk; the write routes check the token before reading any of it;
- images larger than `images.DEFAULT_MAX_DECODE_PIXELS` decoded pixels are refused from their header;
- searches and additions run one at a time in a worker thread, off the event loop, with at most
  `max_queue` waiting (503 + Retry-After beyond): /health, files and thumbnails answer meanwhile;
- only files still as they were indexed are served: the real path recorded at index time, under an
  indexed root, same size, mtime and content hash (else 404, and the entry is flagged);
- without the token, results show paths relative to their indexed folder, not the server's own,
  and no error names a path on the server (the detail goes to the server's log);
- only the hosts it serves are answered: a request whose `Host` header names another (a DNS
  rebinding page) gets 400 (`allowed_hosts`);
- every response carries `X-Content-Type-Options: nosniff`, a Content-Security-Policy with
  `frame-ancestors 'none'` (the page's own inline script and style by hash, nothing else) and
  `Referrer-Policy: no-referrer`; the connection deadlines are in `server.connections`.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import mimetypes
import os
import re
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, File, Header, HTTPException, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from ..errors import ImageError, IndexBusy, LayerseekError, shown
from ..hits import SEARCH_LIMITS, first_photos, parse_region
from ..images import IMAGE_SUFFIXES, jpeg_bytes, jpeg_data_uri, load_image, read_snapshot
from ..index import Index
from ..store.catalog import UPLOADS, Catalog, Entry, is_under

TOKEN_ENV = "LAYERSEEK_TOKEN"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
DEFAULT_MAX_QUEUE = 16  # searches/additions waiting for the worker before 503
MAX_ID = 2 ** 63 - 1  # SQLite's integer range
_MULTIPART_SLACK = 64 * 1024  # form boundaries and headers around the file
_ACCEPTED_TYPES = ("image/", "application/octet-stream")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _safe_name(name: str | None) -> str:
    """A file name an upload may be stored under: its last component, tame characters only."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name or "upload").name).strip("._") or "upload"
    return base[-80:]


class Refused(HTTPException):
    """A request refused for its size or its token. An HTTPException, so that FastAPI passes it on
    as it is when it comes from reading the body (any other error there becomes a 400)."""

    def __init__(self, status: int, detail: str):
        super().__init__(status, detail, headers={"Connection": "close"})


#: bytes of a request's body read before it enters the framework (see RequestGuard)
PREREAD = 1 << 20


class RequestGuard:
    """Pure ASGI middleware: refuses a body over `limit` bytes while it streams (the declared
    Content-Length first, then the bytes as they arrive, chunked or not), so an oversized upload
    never reaches the disk; and answers the write routes' token check before any body is read."""

    def __init__(self, app, limit: int, check_write):
        self.app, self.limit, self.check_write = app, limit, check_write

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            self.check_write(scope["method"], scope["path"], headers.get("authorization"))
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.limit:
                raise Refused(413, f"upload too large: {_mb(int(length))}, more than this server takes "
                                   f"({_mb(self.limit - _MULTIPART_SLACK)}; serve --max-upload-mb)")
        except Refused as r:
            return await JSONResponse({"detail": r.detail}, r.status_code, headers=r.headers)(scope, receive, send)
        seen, started = 0, False

        async def bounded_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise Refused(413, f"upload too large: more than this server takes "
                                       f"({_mb(self.limit - _MULTIPART_SLACK)}; serve --max-upload-mb)")
            return message

        # The body's first PREREAD bytes (all of a photo's, mostly) are read before the request enters
        # the framework: a client that sends its body slowly then costs a suspended coroutine until
        # its deadline, not FastAPI's routing and form parser (0.4 ms each: 250 of them held the
        # next /health back by 100 ms). nginx buffers request bodies for the same reason.
        if length not in ("", "0") or "transfer-encoding" in headers:
            try:
                first = await bounded_receive()
                chunks = [first.get("body", b"")]
                while first["type"] == "http.request" and first.get("more_body") and seen < PREREAD:
                    first = await bounded_receive()
                    chunks.append(first.get("body", b""))
            except Refused as r:
                return await JSONResponse({"detail": r.detail}, r.status_code, headers=r.headers)(scope, receive, send)
            if first["type"] != "http.request":  # the client went away (or its body deadline passed)
                return
            buffered = [{"type": "http.request", "body": b"".join(chunks), "more_body": first.get("more_body", False)}]
            stream = bounded_receive

            async def bounded_receive():  # noqa: F811 - the buffered part first, then the rest as it comes
                return buffered.pop() if buffered else await stream()

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracked_send)
        except Exception as e:  # FastAPI may wrap it (body parsing, task groups)
            refused = _find_refused(e)
            if refused is None or started:
                raise
            await JSONResponse({"detail": refused.detail}, refused.status_code, headers=refused.headers)(
                scope, receive, send)


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def allowed_host_names(host: str = "127.0.0.1", extra: list[str] | tuple[str, ...] = ()) -> set[str]:
    """The names a `Host` header may give for a server listening on `host`: the loopback names,
    `host` itself and `extra` (`--allow-host`). Listening on every interface (0.0.0.0 or ::) also
    admits the machine's own name and any IP address literal: a page can only rebind a *name*
    to this machine, never make a browser send another site's origin with an address literal."""
    names = {*LOCAL_HOSTS, host.strip("[]").lower(), *(h.strip("[]").lower() for h in extra)}
    if host in WILDCARD_HOSTS:
        import socket

        names |= {socket.gethostname().lower(), socket.getfqdn().lower(), "*ip"}
    return names - {""}


def host_name(header: str) -> str:
    """The host part of a `Host` header value (port and IPv6 brackets off), lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HostAndHeaders:
    """Pure ASGI middleware: answers 400 to a request whose Host header is not one of `allowed`
    (see `allowed_host_names`), and adds the defensive headers to every response: `csp(path)`
    gives the Content-Security-Policy of each path."""

    def __init__(self, app, allowed: set[str], csp):
        self.app, self.allowed, self.csp = app, allowed, csp

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = ""
        for k, v in scope.get("headers", []):
            if k == b"host":
                host = host_name(v.decode("latin-1"))
        extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                 (b"x-frame-options", b"DENY"), (b"content-security-policy", self.csp(scope["path"]).encode())]

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if host not in self.allowed and not ("*ip" in self.allowed and _is_ip(host)):
            response = JSONResponse({"detail": "unknown host in the request's Host header (this server answers "
                                               "only the names it was started for; see --allow-host)"}, 400,
                                    headers={"Connection": "close"})
            return await response(scope, receive, with_headers)
        await self.app(scope, receive, with_headers)


#: the page's icon: two photos joined by the lines that verify them
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect x="1" y="7" width="13" height="18" rx="2" '
           'fill="#2962ff"/><rect x="18" y="7" width="13" height="18" rx="2" fill="#2e7d32"/><path d="M9 12L23 14M7 19'
           'L25 20M11 22L22 11" stroke="#fff" stroke-width="1.6"/></svg>')


def page_csp(html: str) -> str:
    """The page's Content-Security-Policy: its own inline script and style (by their hashes), its
    images from this server or the dropped file (blob:), fetches to this server, no frames."""
    import base64

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(t.encode()).digest()).decode()}'" for t in found)

    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; img-src 'self' blob:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


#: the API docs (FastAPI's Swagger UI and ReDoc pages load their scripts from a CDN)
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; style-src 'self' "
            "'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; font-src https://fonts.gstatic.com; "
            "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; worker-src blob:; "
            "frame-ancestors 'none'")
#: everything else: JSON and images, which nothing may run or frame
DATA_CSP = "default-src 'none'; frame-ancestors 'none'"


def _find_refused(e: BaseException | None) -> Refused | None:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, Refused):
            return e
        if isinstance(e, BaseExceptionGroup):
            found = [r for r in map(_find_refused, e.exceptions) if r is not None]
            return found[0] if found else None
        e = e.__cause__ or e.__context__
    return None


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/[^\s:;,'\"()]+")


def without_server_paths(text: str) -> str:
    """`text` with each absolute path cut to its last component, for a client without the token."""
    return _ABSOLUTE_PATH.sub(lambda m: Path(m.group()).name or "/", text)


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme is required)."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def verified_file(e: Entry, roots: list[str], read: bool = True) -> bytes | None:
    """The bytes of an indexed file, only if it is still what was indexed: its real path the one
    recorded, its name under an indexed root (and, when the file itself is a link, its target
    too: a folder the walk followed is part of the folder indexed, a linked file is not), a
    regular file of the catalogued size and mtime, and (with `read`) the catalogued content hash.
    Raises LookupError naming what differs."""
    real = os.path.realpath(e.path)
    if real != (e.real_path or e.path):
        raise LookupError(f"now points to {real}, not the file that was indexed")
    if not any(is_under(e.path, r) for r in roots) or (
            os.path.islink(e.path) and not any(is_under(real, r) for r in roots)):
        raise LookupError("is outside the indexed folders")
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise LookupError(f"cannot be opened ({err.strerror})") from None
    with os.fdopen(fd, "rb") as f:  # checked and read through one descriptor: no swap in between
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise LookupError("is not a regular file")
        if (st.st_size, st.st_mtime_ns) != (e.size, e.mtime_ns):
            raise LookupError("changed since it was indexed (size or time)")
        if not read:
            return None
        data = f.read(e.size + 1)
    if hashlib.sha256(data).hexdigest() != e.sha256:
        raise LookupError("changed since it was indexed (content)")
    return data


class ErrorBody(BaseModel):
    detail: str


_ERRORS = {400: "the upload is not a usable image (empty, truncated …) or the request is malformed",
           401: "adding and removing need `Authorization: Bearer <token>` (or are off: no token set)",
           403: "a photo named by its path is searched only with the key of serve.json (this machine's shell)",
           404: "no such image in the index, or its file is no longer the one indexed",
           409: "the server does not see the file named by its path as the client said (size, time): send the photo",
           413: "the upload is larger than the server accepts, or has too many pixels",
           415: "the upload is not an image this server reads",
           503: "busy (the queue is full, or another process is changing the index): try again after `Retry-After` s"}


def documented(*codes: int) -> dict:
    """OpenAPI `responses` for these error statuses: each a one-line `detail`."""
    return {c: {"model": ErrorBody, "description": _ERRORS[c]} for c in codes}


def warm_up_photo() -> np.ndarray:
    """A 1024 x 768 photo of fine texture (SIFT finds its features): what a server searches
    once at start so that every stage of a search is loaded before the first user's."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)  # 8 x 8 blocks: corners at two scales


def create_app(index_path: str | Path, token: str | None = None, max_upload: int = DEFAULT_MAX_UPLOAD,
               threads: int | None = None, rerank_with: str | Path | None = None, shortlist: int = 100,
               max_queue: int = DEFAULT_MAX_QUEUE, allowed_hosts: set[str] | None = None,
               local_key: str | None = None, warm: bool = False, on_stop: Callable[[], None] | None = None,
               catching_up: Callable[[str, int, int, float], None] | None = None) -> FastAPI:
    """The app for one index. `token` defaults to $LAYERSEEK_TOKEN (None: adding and removing are
    off). `rerank_with`: a mof index of the same photos that re-scores this (global) index's
    `shortlist` best of every search (two stages). `max_queue`: searches and additions that may
    wait for the worker before the server answers 503. `allowed_hosts`: the names a request's
    Host header may give (default: the loopback names; see `allowed_host_names`). `local_key`: the
    key `layerseek search` finds in serve.json (`server.client`): it shows full paths, nothing
    more. `warm`: load the network, the word engine and the graphs at start, not in the first
    search's time. `on_stop`: called as the server shuts down (uvicorn then re-raises the signal
    that stopped it, and code after its `run` never runs). `catching_up`: `Index.catching_up` (the
    search's caches brought up to date with many photos: the command shows a bar)."""
    idx = Index.open(index_path, threads)
    idx.catching_up = catching_up
    local = Index.open(rerank_with, threads) if rerank_with else None
    if local is not None and (idx.kind, local.kind) != ("global", "local"):
        raise LayerseekError("two-stage serving needs a global index and a mof index to re-rank with")
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    # The network and the index's SQLite connection are used by one worker thread, one job at a
    # time (on a CPU the forward pass is the bottleneck anyway); lookups for files, thumbnails and
    # /health go through a second connection and never wait for it.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layerseek-index")
    reader: Catalog = idx.catalog.reader()
    read_lock = threading.Lock()
    queue = {"pending": 0, "seconds": 1.0}  # jobs waiting or running; a running mean of their time
    params = idx.catalog.manifest["params"]
    thumbs = idx.catalog.root / "cache" / "thumbs"

    def warm_up() -> None:
        with contextlib.suppress(LayerseekError, OSError):
            _ = idx.fx
            idx.update_graph()
            # one search of a made-up photo: the network's first run, the word scorer's compiled
            # loops (0.65 s from numba's cache), the verification threads; the first real search
            # after a start took 1.4 s where the next ones take 0.6 (docs/BENCHMARKS.md)
            idx.search(warm_up_photo(), top=1)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm:
            worker.submit(warm_up)  # the first search queues behind it
        yield
        if on_stop is not None:
            on_stop()
        worker.shutdown(wait=True)
        reader.close()
        idx.close()
        if local is not None:
            local.close()

    app = FastAPI(title="layerseek", version=idx.catalog.manifest["versions"]["layerseek"], lifespan=lifespan,
                  description=f"Search the index {idx.catalog.root.name} ({params['method']} on {params['backbone']}) by example image.")
    app.state.index = idx

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        """The last net: one line on the server's stderr naming the request and the log file with
        the traceback; the client gets a 500 without the server's paths."""
        from ..errors import log_unexpected

        print(log_unexpected(exc, f"{request.method} {request.url.path}"), file=sys.stderr, flush=True)
        return JSONResponse({"detail": "unexpected server error (logged on the server)"}, 500)

    def token_ok(authorization: str | None) -> bool:
        given = bearer(authorization)
        return token is not None and given is not None and hmac.compare_digest(given.encode(), token.encode())

    def local_ok(authorization: str | None) -> bool:
        """The key of serve.json: a search from this machine's shell, by the user who started the
        server (the file is theirs alone)."""
        given = bearer(authorization)
        return local_key is not None and given is not None and hmac.compare_digest(given.encode(), local_key.encode())

    def paths_ok(authorization: str | None) -> bool:
        """Full paths in answers: the token, or the key of serve.json (a local user's own search)."""
        return token_ok(authorization) or local_ok(authorization)

    def read_local(path: str, size: int, mtime_ns: int) -> tuple[str, bytes]:
        """(name, bytes) of a photo the shell names by its path on this machine (`read_snapshot`:
        a regular file, read whole without blocking), only while the server sees it with the size
        and time the shell saw (a server in another mount namespace, a file changing), at most as
        large as `index` reads (`images.MAX_FILE_BYTES`: no upload's limit, as nothing is uploaded;
        a camera's RAW file is 20-60 MB); else 409, and the shell sends the photo itself."""
        try:
            data, now_size, now_mtime = read_snapshot(path)
        except ImageError:
            now_size = None
        if now_size is None or (now_size, now_mtime) != (size, mtime_ns):
            raise HTTPException(409, "the server does not see this file as the client does; send the photo")
        return os.path.basename(path), data

    def check_write(method: str, path: str, authorization: str | None) -> None:
        if not ((method == "POST" and path.rstrip("/") == "/images") or (method == "DELETE" and path.startswith("/images/"))):
            return
        if token is None:
            raise Refused(403, f"adding and removing images over HTTP is off: start the server with {TOKEN_ENV} set")
        if not token_ok(authorization):
            raise Refused(401, "missing or wrong token (send 'Authorization: Bearer <token>')")

    app.add_middleware(RequestGuard, limit=max_upload + _MULTIPART_SLACK, check_write=check_write)
    page_html = resources.files("layerseek.server").joinpath("static/index.html").read_text()
    csp_of_page = page_csp(page_html)
    app.add_middleware(HostAndHeaders, allowed=allowed_hosts if allowed_hosts is not None else allowed_host_names(),
                       csp=lambda path: csp_of_page if path == "/" else DOCS_CSP if path in ("/docs", "/redoc") else DATA_CSP)

    async def run_job(fn, *args):
        """Run fn(*args) on the index worker, off the event loop; 503 when too many wait."""
        if queue["pending"] >= max_queue:
            wait = max(1, math.ceil(queue["pending"] * queue["seconds"]))
            raise HTTPException(503, f"busy: {queue['pending']} requests are waiting; try again in {wait} s",
                                headers={"Retry-After": str(wait)})
        queue["pending"] += 1
        try:
            t0 = time.perf_counter()
            try:
                out = await asyncio.get_running_loop().run_in_executor(worker, fn, *args)
            except IndexBusy:  # an `index` run in another process holds the index
                raise HTTPException(503, "index busy: another process is changing it; try again later",
                                    headers={"Retry-After": "5"}) from None
            queue["seconds"] = 0.8 * queue["seconds"] + 0.2 * (time.perf_counter() - t0)
            return out
        finally:
            queue["pending"] -= 1

    async def read_upload(file: UploadFile) -> bytes:
        name = file.filename or "upload"
        ctype = (file.content_type or "").lower()
        if ctype and not ctype.startswith(_ACCEPTED_TYPES):
            raise HTTPException(415, f"{name}: not an image (content type {ctype})")
        data = await file.read(max_upload + 1)
        if len(data) > max_upload:
            raise HTTPException(413, f"{name}: upload too large: more than this server takes ({_mb(max_upload)}; "
                                     "serve --max-upload-mb)")
        if not data:
            raise HTTPException(400, f"{name}: empty file")
        return data

    def image_error(e: ImageError) -> HTTPException:
        return HTTPException(413 if e.reason == "too large" else 415 if e.reason in ("not an image", "unsupported") else 400,
                             str(e))

    def shown_path(path: str, full: bool) -> str:
        """The path a client sees: absolute for the token holder, else relative to its indexed folder."""
        if full:
            return shown(path)
        with read_lock:
            root = reader.root_of(path)
        return shown(os.path.relpath(path, root) if root and root != path else Path(path).name)

    def hit_json(rank: int, h, full: bool, content: str | None = None) -> dict:
        out = {"rank": rank, "id": h.id, "path": shown_path(h.path, full), "name": shown(Path(h.path).name),
               "score": round(h.score, 6), "inliers": h.inliers, "verified": h.verified,
               "image": f"/images/{h.id}", "thumbnail": f"/thumbnails/{h.id}", "content": content}
        if h.matches is not None:
            out["matches"] = h.matches
        return out

    def not_served(image_id: int, why: str, full: bool) -> HTTPException:
        """404 for an image whose file cannot be served: the reason (which may name where a link
        now points) for the token holder; for anyone else a generic line, the reason logged."""
        if full:
            return HTTPException(404, f"image {image_id} is not served: {why}")
        print(f"layerseek serve: image {image_id} not served: {shown(why)}", file=sys.stderr, flush=True)
        return HTTPException(404, f"image {image_id} is not served: its file is no longer the one indexed "
                                  "(details in the server's log)")

    def served_entry(image_id: int, read: bool, full: bool = False) -> tuple[Entry, bytes | None]:
        """The catalog entry and (with `read`) the verified bytes of an image, or 404."""
        with read_lock:
            e = reader.by_id(image_id)
            roots = reader.roots()
        if e is None:
            raise HTTPException(404, f"no image {image_id} in the index")
        try:
            return e, verified_file(e, roots, read)
        except LookupError as why:
            with read_lock, contextlib.suppress(sqlite3.Error):  # a read-only index stays unflagged
                reader.flag(e.id, str(why))
            raise not_served(image_id, f"the file {why}", full) from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return page_html

    @app.get("/favicon.svg", response_class=Response, include_in_schema=False)
    def favicon() -> Response:
        return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.get("/health")
    def health() -> dict:
        with read_lock:
            n = reader.count()
        return {"status": "ok", "images": n, "method": params["method"], "backbone": params["backbone"],
                "layers": params["layers"], "adding": token is not None, "max_upload": max_upload,
                "queue": queue["pending"], "max_queue": max_queue, "verify": idx.verify_settings,
                "rerank_with": local.catalog.root.name if local else None, "shortlist": shortlist if local else None}

    def do_search(name: str, data: bytes, top: int, qe: int, verify: int | None, matches: bool = False,
                  words: int | None = None, word_filter: float | None = None, hubness: int | None = None,
                  preview: int = 0, distinct: bool = False, region: tuple | None = None):
        """(the hits, the query as the search decoded it as a JPEG data: URI at most `preview` px, or
        None when `preview` is 0). `region`: the part of the photo searched with (its whole is shown)."""
        if region is None:
            img, data = idx.query_image(name, data), None  # decoded once: searched, and shown when asked
            shown_query = jpeg_data_uri(img, preview) if preview else None
        else:  # the search cuts the part from the photo at full resolution; the whole is shown
            img = name
            shown_query = jpeg_data_uri(load_image(name, max_side=preview, data=data), preview) if preview else None
        if local is not None:
            return idx.search_two_stage(img, local, top=top, shortlist=shortlist, data=data, distinct=distinct,
                                        region=region), shown_query
        return idx.search(img, top=top, qe=qe, verify=verify, matches=matches, words=words, word_filter=word_filter,
                          hubness=hubness, distinct=distinct, data=data, region=region), shown_query

    def search_options(top: int = Query(12, ge=SEARCH_LIMITS["top"][0], le=SEARCH_LIMITS["top"][1]),
                       qe: int = Query(0, ge=SEARCH_LIMITS["qe"][0], le=SEARCH_LIMITS["qe"][1]),
                       verify: int | None = Query(None, ge=SEARCH_LIMITS["verify"][0], le=SEARCH_LIMITS["verify"][1], description="verify the first N geometrically "
                                                  "(default 100 on an index that stores local features; 0: off)"),
                       words: int | None = Query(None, ge=SEARCH_LIMITS["words"][0], le=SEARCH_LIMITS["words"][1],
                                                 description="also verify the N best of the word engine over the "
                                                 "stored SIFT features (default 100 on an index that has it; 0: off)"),
                       word_filter: float | None = Query(None, ge=SEARCH_LIMITS["word_filter"][0],
                                                         le=SEARCH_LIMITS["word_filter"][1],
                                                         description="candidates whose word score is at most this are "
                                                         "not verified (default: the index's setting; -1: all verified)"),
                       hubness: int | None = Query(None, ge=SEARCH_LIMITS["hubness"][0], le=SEARCH_LIMITS["hubness"][1],
                                                   description="rank by the cosine less half each image's mean cosine "
                                                   "to its K nearest (default: the index's setting; 0: the cosine)"),
                       matches: bool = Query(False, description="each verified result also lists the correspondences "
                                             "that verified it: [query x, y, result x, y] as shares of each image's size"),
                       exclude: int | None = Query(None, ge=1, le=MAX_ID, description="leave this indexed image, and "
                                                   "its identical files, out of the results (searching with an "
                                                   "indexed photo: not itself)"),
                       region: str | None = Query(None, max_length=100, description="search with a part of the "
                                                  "photo: X,Y,W,H, its left and top edges, width and height as shares "
                                                  "of the photo's (0.5,0,0.5,1: the right half)"),
                       photos: bool = Query(False, description="`top` counts photos: identical files (the same "
                                            "content) count once, and every file of the photos returned is listed "
                                            "(each result's `content` tells them apart)"),
                       preview: int = Query(0, ge=0, le=1024, description="also return the query as the search read "
                                            "it (upright), a JPEG data: URI whose longer side is at most this, as "
                                            "`query_image` (for a photo a browser cannot show: HEIC, TIFF; 0: none)"),
                       ) -> dict:
        """The options of a search, the same for an upload and a photo named by its path."""
        return {"top": top, "qe": qe, "verify": verify, "words": words, "word_filter": word_filter, "hubness": hubness,
                "matches": matches, "exclude": exclude, "preview": preview, "photos": photos, "region": region}

    async def answer(name: str, data: bytes, o: dict, authorization: str | None) -> dict:
        """A search's answer for a photo's bytes: the results, their paths as the caller may see them."""
        exclude = o["exclude"]
        t0 = time.perf_counter()
        try:
            region = parse_region(o["region"]) if o["region"] is not None else None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        if exclude is not None:  # left out with its identical files: as many more results asked for
            with read_lock:
                left_out = set(reader.same_content(exclude)) | {exclude}
        else:
            left_out = set()
        try:
            asked = o["top"] + (1 if o["photos"] and left_out else len(left_out))
            hits, shown_query = await run_job(do_search, name, data, min(asked, SEARCH_LIMITS["top"][1]), o["qe"],
                                              o["verify"], o["matches"], o["words"], o["word_filter"], o["hubness"],
                                              o["preview"], o["photos"], region)
        except ImageError as e:
            raise image_error(e) from None
        except LayerseekError as e:
            raise HTTPException(400, without_server_paths(str(e)) if not paths_ok(authorization) else str(e)) from None
        full = paths_ok(authorization)
        hits = [h for h in hits if h.id not in left_out]  # its copies are the same photo again
        with read_lock:  # which results are the same file content (the page shows them as one)
            content = {i: sha[:16] for i, sha in reader.contents(h.id for h in hits).items()}
        hits = first_photos(hits, o["top"], content) if o["photos"] else hits[:o["top"]]
        out = {"query": name, "seconds": round(time.perf_counter() - t0, 4),
               "results": [hit_json(i, h, full, content.get(h.id)) for i, h in enumerate(hits, 1)]}
        if shown_query is not None:
            out["query_image"] = shown_query
        return out

    @app.post("/search", responses=documented(400, 413, 415, 503))
    async def search(file: UploadFile = File(..., description="the example image"),
                     options: dict = Depends(search_options),
                     authorization: str | None = Header(None, description="Bearer token: results show full paths")) -> dict:
        data = await read_upload(file)
        return await answer(file.filename or "upload", data, options, authorization)

    @app.post("/search/local", responses=documented(400, 403, 409, 413, 415, 503))
    async def search_local(path: str = Query(..., description="the photo's path on this machine"),
                           size: int = Query(..., ge=0, description="its size in bytes, as the client sees it"),
                           mtime_ns: int = Query(..., description="its modification time in ns, as the client sees it"),
                           options: dict = Depends(search_options),
                           authorization: str | None = Header(None, description="the key of serve.json")) -> dict:
        """`/search` for a photo named by its path, for this machine's shell alone (the key of
        serve.json): nothing is uploaded, the server reads the file; 409 when it does not see it
        as `size` and `mtime_ns` say (then send the photo to `/search`)."""
        from starlette.concurrency import run_in_threadpool

        if not local_ok(authorization):
            raise HTTPException(403, "a photo named by its path is searched only for this machine's shell (the key "
                                     "of serve.json); send the photo to /search")
        name, data = await run_in_threadpool(read_local, path, size, mtime_ns)
        return await answer(name, data, options, authorization)

    @app.get("/images/{image_id}", response_class=Response,
             responses={200: {"description": "the indexed file as it is on disk",
                              "content": {"image/*": {}, "application/octet-stream": {}}}, **documented(404)})
    def image(image_id: int = PathParam(ge=1, le=MAX_ID), authorization: str | None = Header(None)) -> Response:
        e, data = served_entry(image_id, read=True, full=paths_ok(authorization))
        media = mimetypes.guess_type(e.path)[0] or "application/octet-stream"
        return Response(data, media_type=media)

    @app.post("/preview", response_class=Response,
              responses={200: {"description": "the upload as a JPEG, its longer side at most `size` px",
                               "content": {"image/jpeg": {}}}, **documented(400, 413, 415)})
    async def preview(file: UploadFile = File(..., description="a photo"),
                      size: int = Query(256, ge=64, le=1024)) -> Response:
        """A photo as a JPEG at most `size` px, upright: what the page shows of a dropped photo a
        browser cannot show (HEIC outside Safari, TIFF) while its search runs. A HEIC's embedded
        thumbnail serves when it covers the size (milliseconds, not the photo's second of
        decoding). Decoded beside the search queue, not in it."""
        from starlette.concurrency import run_in_threadpool

        data = await read_upload(file)
        name = file.filename or "upload"
        try:
            jpeg = await run_in_threadpool(lambda: jpeg_bytes(load_image(name, max_side=size, data=data, preview=True)))
        except ImageError as e:
            raise image_error(e) from None
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/thumbnails/{image_id}", response_class=Response,
             responses={200: {"description": "a JPEG of the image, its longer side `size` px",
                              "content": {"image/jpeg": {}}}, **documented(404)})
    def thumbnail(image_id: int = PathParam(ge=1, le=MAX_ID), size: int = Query(256, ge=64, le=1024),
                  authorization: str | None = Header(None)) -> Response:
        full = paths_ok(authorization)
        with read_lock:
            known = reader.by_id(image_id)
        cached = thumbs / f"{known.sha256[:24]}-{size}.jpg" if known else None
        have = cached is not None and cached.is_file()
        # a cached thumbnail shows the indexed content; served only while the file is as indexed
        e, data = served_entry(image_id, read=not have, full=full)
        if have:
            return FileResponse(cached, media_type="image/jpeg")
        try:
            arr = load_image(e.path, max_side=size, data=data, preview=True)
        except ImageError as err:
            raise not_served(image_id, str(err), full) from None
        jpeg = jpeg_bytes(arr)

        def save():
            thumbs.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(cached.name + f".{threading.get_ident()}.{os.getpid()}.tmp")
            tmp.write_bytes(jpeg)
            os.replace(tmp, cached)

        idx.catalog.keep_cache(save)  # read-only or full: served, not kept
        return Response(jpeg, media_type="image/jpeg")

    def do_add(dest: Path):
        report = idx.add_files([dest])
        if local is not None:  # two stages: both indexes hold the same photos
            local.add_files([dest])
        return report, idx.catalog.by_path(str(dest.resolve()))

    @app.post("/images", status_code=201, responses=documented(400, 401, 413, 415, 503))
    async def add_image(file: UploadFile = File(..., description="an image to add to the index"),
                        authorization: str | None = Header(None)) -> dict:
        # the token was checked before the body was read (RequestGuard)
        data = await read_upload(file)
        name = _safe_name(file.filename)
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            name += ".jpg"
        try:
            load_image(name, max_side=64, data=data)  # refuse what would not index, before storing it
        except ImageError as e:
            raise image_error(e) from None
        folder = idx.catalog.root / UPLOADS
        folder.mkdir(exist_ok=True)
        dest = folder / f"{hashlib.sha256(data).hexdigest()[:16]}-{name}"
        stored = not dest.exists()
        if stored:
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
        try:
            report, e = await run_job(do_add, dest)
        except HTTPException:  # refused (busy): the copy stored for it is not left behind
            if stored:
                dest.unlink(missing_ok=True)
            raise
        if e is None:
            raise HTTPException(415, "; ".join(report.failed) or f"{name}: could not be indexed")
        return {"id": e.id, "path": shown(e.path), "image": f"/images/{e.id}", "thumbnail": f"/thumbnails/{e.id}",
                "added": report.added, "unchanged": report.unchanged}

    def do_delete(image_id: int):
        e = idx.catalog.by_id(image_id)
        if e is None:
            return None, 0
        idx.remove([e.path])
        if local is not None:
            local.remove([e.path])
        return e, idx.catalog.count()

    @app.delete("/images/{image_id}", responses=documented(401, 404, 503))
    async def delete_image(image_id: int = PathParam(ge=1, le=MAX_ID), authorization: str | None = Header(None)) -> dict:
        e, left = await run_job(do_delete, image_id)
        if e is None:
            raise HTTPException(404, f"no image {image_id} in the index")
        uploads = (idx.catalog.root / UPLOADS).resolve()
        if Path(e.path).parent == uploads:  # only copies the server itself stored
            Path(e.path).unlink(missing_ok=True)
        return {"removed": image_id, "path": shown(e.path), "images": left}

    return app
