"""`layerseek serve`: an index over HTTP (FastAPI) and a web page to search it by dropping an image.

    GET  /                 the page
    GET  /health           status, image count, method
    POST /search           multipart field `file` (an image), ?top=K&qe=K  ->  ranked matches
    GET  /images/{id}      the catalogued file itself            (nothing outside the catalog)
    GET  /thumbnails/{id}  a JPEG thumbnail, ?size=64..1024
    POST /images           multipart field `file`: store the upload in the index and index it   (token)
    DELETE /images/{id}    forget an image (an uploaded copy is deleted too)                     (token)

Adding and removing need `Authorization: Bearer <token>` with the token from the environment
variable LAYERSEEK_TOKEN; without it those two routes answer 403. The OpenAPI docs are at /docs.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import mimetypes
import os
import re
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, Header, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from ..errors import ImageError, LayerseekError
from ..images import IMAGE_SUFFIXES, load_image
from ..index import Index

TOKEN_ENV = "LAYERSEEK_TOKEN"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
UPLOADS = "uploads"  # images added over HTTP are stored in the index directory, under this folder
_ACCEPTED_TYPES = ("image/", "application/octet-stream")


def _safe_name(name: str | None) -> str:
    """A file name an upload may be stored under: its last component, tame characters only."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name or "upload").name).strip("._") or "upload"
    return base[-80:]


def create_app(index_path: str | Path, token: str | None = None, max_upload: int = DEFAULT_MAX_UPLOAD,
               threads: int | None = None, rerank_with: str | Path | None = None, shortlist: int = 100) -> FastAPI:
    """The app for one index. `token` defaults to $LAYERSEEK_TOKEN (None: adding and removing are
    off). `rerank_with`: a mof index of the same photos that re-scores this (global) index's
    `shortlist` best of every search (two stages)."""
    idx = Index.open(index_path, threads)
    local = Index.open(rerank_with, threads) if rerank_with else None
    if local is not None and (idx.method.kind, local.method.kind) != ("global", "local"):
        raise LayerseekError("two-stage serving needs a global index and a mof index to re-rank with")
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    # One request at a time touches the index: the network and SQLite connection are shared, and
    # on a CPU the forward pass is the bottleneck anyway.
    lock = threading.Lock()
    params = idx.catalog.manifest["params"]
    thumbs = idx.catalog.root / "cache" / "thumbs"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        idx.close()
        if local is not None:
            local.close()

    app = FastAPI(title="layerseek", version=idx.catalog.manifest["versions"]["layerseek"], lifespan=lifespan,
                  description=f"Search {idx.catalog.root} ({params['method']} on {params['backbone']}) by example image.")
    app.state.index = idx

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        # Refuse an oversized upload from its declared length, before the body is read.
        length = request.headers.get("content-length")
        if request.method == "POST" and length and length.isdigit() and int(length) > max_upload + 64 * 1024:
            return JSONResponse({"detail": f"upload too large: {int(length)} bytes > limit {max_upload}"}, 413)
        return await call_next(request)

    async def read_upload(file: UploadFile) -> bytes:
        name = file.filename or "upload"
        ctype = (file.content_type or "").lower()
        if ctype and not ctype.startswith(_ACCEPTED_TYPES):
            raise HTTPException(415, f"{name}: not an image (content type {ctype})")
        data = await file.read(max_upload + 1)
        if len(data) > max_upload:
            raise HTTPException(413, f"{name}: upload too large (> {max_upload} bytes)")
        if not data:
            raise HTTPException(400, f"{name}: empty file")
        return data

    def image_error(e: ImageError) -> HTTPException:
        return HTTPException(413 if e.reason == "too large" else 415 if e.reason in ("not an image", "unsupported") else 400,
                             str(e))

    def hit_json(rank: int, h) -> dict:
        return {"rank": rank, "id": h.id, "path": h.path, "name": Path(h.path).name, "score": round(h.score, 6),
                "image": f"/images/{h.id}", "thumbnail": f"/thumbnails/{h.id}"}

    def check_token(authorization: str | None) -> None:
        if token is None:
            raise HTTPException(403, f"adding and removing images over HTTP is off: start the server with {TOKEN_ENV} set")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong token (send 'Authorization: Bearer <token>')")

    def entry_or_404(image_id: int):
        with lock:
            e = idx.catalog.by_id(image_id)
        if e is None:
            raise HTTPException(404, f"no image {image_id} in the index")
        if not Path(e.path).is_file():
            raise HTTPException(404, f"image {image_id} ({e.path}) is no longer on disk")
        return e

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("layerseek.server").joinpath("static/index.html").read_text()

    @app.get("/health")
    def health() -> dict:
        with lock:
            n = idx.catalog.count()
        return {"status": "ok", "images": n, "method": params["method"], "backbone": params["backbone"],
                "layers": params["layers"], "adding": token is not None, "max_upload": max_upload,
                "rerank_with": str(local.catalog.root) if local else None, "shortlist": shortlist if local else None}

    @app.post("/search")
    async def search(file: UploadFile = File(..., description="the example image"),
                     top: int = Query(12, ge=1, le=1000), qe: int = Query(0, ge=0, le=50)) -> dict:
        data = await read_upload(file)
        t0 = time.perf_counter()
        try:
            with lock:
                if local is not None:
                    hits = idx.search_two_stage(file.filename or "upload", local, top=top, shortlist=shortlist, data=data)
                else:
                    hits = idx.search(file.filename or "upload", top=top, qe=qe, data=data)
        except ImageError as e:
            raise image_error(e) from None
        except LayerseekError as e:
            raise HTTPException(400, str(e)) from None
        return {"query": file.filename, "seconds": round(time.perf_counter() - t0, 4),
                "results": [hit_json(i, h) for i, h in enumerate(hits, 1)]}

    @app.get("/images/{image_id}")
    def image(image_id: int) -> FileResponse:
        e = entry_or_404(image_id)
        media = mimetypes.guess_type(e.path)[0] or "application/octet-stream"
        return FileResponse(e.path, media_type=media)

    @app.get("/thumbnails/{image_id}")
    def thumbnail(image_id: int, size: int = Query(256, ge=64, le=1024)) -> Response:
        e = entry_or_404(image_id)
        cached = thumbs / f"{e.sha256[:24]}-{size}.jpg"
        if cached.is_file():
            return FileResponse(cached, media_type="image/jpeg")
        try:
            arr = load_image(e.path, max_side=size)
        except ImageError as err:
            raise HTTPException(404, str(err)) from None
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=85)
        thumbs.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + f".{threading.get_ident()}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, cached)
        return Response(buf.getvalue(), media_type="image/jpeg")

    @app.post("/images", status_code=201)
    async def add_image(file: UploadFile = File(..., description="an image to add to the index"),
                        authorization: str | None = Header(None)) -> dict:
        check_token(authorization)
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
        if not dest.exists():
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
        with lock:
            report = idx.add_files([dest])
            if local is not None:  # two stages: both indexes hold the same photos
                local.add_files([dest])
            e = idx.catalog.by_path(str(dest.resolve()))
        if e is None:
            raise HTTPException(415, "; ".join(report.failed) or f"{name}: could not be indexed")
        return {"id": e.id, "path": e.path, "image": f"/images/{e.id}", "thumbnail": f"/thumbnails/{e.id}",
                "added": report.added, "unchanged": report.unchanged}

    @app.delete("/images/{image_id}")
    def delete_image(image_id: int, authorization: str | None = Header(None)) -> dict:
        check_token(authorization)
        with lock:
            e = idx.catalog.by_id(image_id)
            if e is None:
                raise HTTPException(404, f"no image {image_id} in the index")
            idx.remove([e.path])
            if local is not None:
                local.remove([e.path])
            left = idx.catalog.count()
        uploads = (idx.catalog.root / UPLOADS).resolve()
        if Path(e.path).parent == uploads:  # only copies the server itself stored
            Path(e.path).unlink(missing_ok=True)
        return {"removed": image_id, "path": e.path, "images": left}

    return app
