"""`layerseek search` through a running `layerseek serve` of the same index.

A server writes `serve.json` in the index directory while it runs: its address, its process id
and a key made at its start (the file is the user's own, mode 0600). A search from the shell that
finds the file, the process alive and the server answering has its photo searched there instead
of starting a network of its own: no imports of torch, no model to load. The key lets the answer
carry full paths, as a local search prints them, and lets the photo be named by its path on this
machine (`/search/local`: nothing uploaded); it grants nothing else (adding and removing still
need LAYERSEEK_TOKEN).

Only the standard library here (and `hits.Hit`): a search from the shell runs this before
anything heavy is imported (`shell`).
"""
from __future__ import annotations

import contextlib
import json
import os
from collections import namedtuple
from pathlib import Path

SERVE_FILE = "serve.json"

#: a running server as serve.json announces it (a named tuple: `dataclasses` costs a search 8 ms)
Server = namedtuple("Server", "url pid key max_upload", defaults=(None,))  # max_upload: bytes, from /health


def new_key() -> str:
    import secrets  # the server's, not a search's: 20 ms of imports

    return secrets.token_urlsafe(24)


def local_url(host: str, port: int) -> str:
    """The address a process on this machine reaches a server listening on host:port at."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def announce(index_root: str | Path, url: str, key: str) -> Path | None:
    """Write serve.json (mode 0600, atomically); None where the index directory is read-only."""
    path = Path(index_root) / SERVE_FILE
    tmp = path.with_name(f".{SERVE_FILE}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": url, "pid": os.getpid(), "key": key}, f)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
    return path


def withdraw(index_root: str | Path, key: str) -> None:
    """Remove serve.json if it is still this server's (another may have started since)."""
    path = Path(index_root) / SERVE_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("key") == key:
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: not a server this user started
        return False
    return True


def running_server(index_root: str | Path, timeout: float = 0.5) -> Server | None:
    """The server announced in the index directory, if its process is alive, answers, and searches
    this index alone (not two stages)."""
    try:
        info = json.loads((Path(index_root) / SERVE_FILE).read_text())
        server = Server(str(info["url"]), int(info["pid"]), str(info["key"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(server.pid):
        return None
    try:
        status, body = _request(server.url, "GET", "/health", timeout=timeout)
        health = json.loads(body) if status == 200 else None
    except (OSError, ValueError):
        return None
    # a two-stage server (--rerank-with) answers otherwise than this index searched alone
    ok = isinstance(health, dict) and health.get("status") == "ok" and not health.get("rerank_with")
    return server._replace(max_upload=health.get("max_upload")) if ok else None


#: the upload's declared type by suffix (the server decodes by content; this only labels it)
_IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                ".heic": "image/heic", ".heif": "image/heif", ".avif": "image/avif", ".tif": "image/tiff",
                ".tiff": "image/tiff", ".bmp": "image/bmp", ".gif": "image/gif", ".jfif": "image/jpeg",
                ".ppm": "image/x-portable-pixmap", ".pgm": "image/x-portable-graymap", ".pbm": "image/x-portable-bitmap"}


def _request(url: str, method: str, path: str, body: bytes | None = None, timeout: float = 120.0,
             headers: dict | None = None) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 request to the server at `url` (http://host:port, as
    `local_url` writes it), on a socket of its own: http.client's imports (the email package) are
    23 ms of a search that takes 0.5 s. OSError or ValueError for an answer that is not HTTP."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(url)
    body = body or b""
    host = f"[{where.hostname}]" if ":" in (where.hostname or "") else where.hostname
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{where.port}", "Connection: close",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    with socket.create_connection((where.hostname, where.port), timeout=timeout) as conn:
        conn.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)
        raw = b"".join(iter(lambda: conn.recv(1 << 16), b""))  # to the end: the server closes
    return parse_answer(raw)


def parse_answer(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of a whole HTTP/1.1 answer, its body as Content-Length or chunks give it."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError("not an HTTP answer")
    named = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    if named.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0], 16)
            if n == 0:
                return int(parts[1]), bytes(out)
            if len(rest) < n:
                raise ValueError("the answer was cut short")
            out += rest[:n]
            rest = rest[n + 2:]
    if "content-length" in named:
        n = int(named["content-length"])
        if len(rest) < n:
            raise ValueError("the answer was cut short")
        rest = rest[:n]
    return int(parts[1]), rest


class RemoteError(Exception):
    """The server could not answer (then the search runs here), or refused the photo (`refused`:
    its message is the answer, as a local search would give it)."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


def search(server: Server, image: Path, params: dict, timeout: float = 120.0,
           data: bytes | None = None) -> tuple[list, dict]:
    """Ask the server's /search for the photo: by its path (the server, this machine's, reads it:
    nothing uploaded), or, where the server does not see the file as this process does (409),
    uploaded; `data`: the photo's bytes, uploaded (`image` only names it: standard input);
    (hits as `hits.Hit`, the whole answer)."""
    from urllib.parse import quote

    from ..hits import Hit

    query = "&".join(f"{k}={v}" for k, v in params.items() if v is not None)
    auth = {"Authorization": f"Bearer {server.key}"}
    name = image.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
    try:
        status = None
        if data is None:
            st = image.stat()
            named = (f"/search/local?{query}&path={quote(os.path.abspath(image), safe='')}&size={st.st_size}"
                     f"&mtime_ns={st.st_mtime_ns}")
            status, raw = _request(server.url, "POST", named, None, timeout, auth)
        # 409: the server sees another file there (or none); 404 / 405: a server from before paths
        if data is not None or status in (409, 404, 405, 403):  # the photo itself, then
            data = image.read_bytes() if data is None else data
            if isinstance(server.max_upload, int) and len(data) > server.max_upload:  # it would be cut off
                raise RemoteError(f"{image}: {len(data) / 1e6:.1f} MB, more than the server takes as an upload "
                                  f"({server.max_upload / 1e6:.1f} MB: serve --max-upload-mb)")
            boundary = os.urandom(16).hex()
            kind = _IMAGE_TYPES.get(image.suffix.lower(), "application/octet-stream")  # the server reads the bytes
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                    f"Content-Type: {kind}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
            status, raw = _request(server.url, "POST", f"/search?{query}", body, timeout,
                                   {"Content-Type": f"multipart/form-data; boundary={boundary}", **auth})
    except FileNotFoundError as e:
        raise RemoteError(f"{image}: {e.strerror or e}", refused=True) from None
    except (OSError, ValueError) as e:
        raise RemoteError(f"the server did not answer ({e})") from None
    if status != 200:
        try:
            detail = json.loads(raw).get("detail")
        except (ValueError, AttributeError):
            detail = None
        # 400 / 415: the photo itself (the same line a local search gives); 413, 503 and the rest: run here
        refused = status in (400, 415) and isinstance(detail, str)
        if refused and detail.startswith(f"{name}:"):  # the server knows the upload's name; say the path
            detail = f"{image}{detail[len(name):]}"
        raise RemoteError(detail if refused else f"the server answered {status}", refused=refused)
    try:
        answer = json.loads(raw)
    except ValueError as e:
        raise RemoteError(f"the server did not answer ({e})") from None
    hits = [Hit(int(h["id"]), str(h["path"]), float(h["score"]), h.get("inliers"), bool(h.get("verified")))
            for h in answer.get("results", [])]
    return hits, answer
