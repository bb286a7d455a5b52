"""`layerseek serve`: the web page and the HTTP API."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import LayerseekError
from . import base
from .base import app, fail

#: connections the system queues before the server accepts them (uvicorn's own default). Python's
#: default, 128, made a burst of connections wait for the client's SYN to be sent again.
LISTEN_BACKLOG = 2048


def reachable_at(host: str, port: int) -> list[str]:
    """Where another device reaches a server listening on every interface (`host` 0.0.0.0 or ::):
    the address of the interface this machine's route out leaves by, and its name; nothing for a
    server on one address (it is what `serve` prints already)."""
    import contextlib
    import socket

    from ..server.app import WILDCARD_HOSTS

    if host not in WILDCARD_HOSTS:
        return []
    out = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # a documentation address: no packet is sent, a route is chosen
        address = probe.getsockname()[0]
        if not address.startswith(("127.", "0.")):
            out.append(f"http://{address}:{port}/")
    name = socket.gethostname()
    if name and name.lower() != "localhost":
        out.append(f"http://{name}:{port}/")
    return out


@app.command(short_help="Serve a web page and an HTTP API for an index.")
def serve(index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="the index directory")],
          host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port")] = 8000,
          max_upload_mb: Annotated[float, typer.Option(help="largest accepted upload, MiB")] = 20.0,
          threads: Annotated[Optional[int], typer.Option(help="CPU threads for the network")] = None,
          rerank_with: Annotated[Optional[Path], typer.Option(help="two stages: a mof index of the same photos "
                                                                    "re-scores each search's shortlist")] = None,
          shortlist: Annotated[int, typer.Option(help="two stages: how many are re-scored")] = 100,
          max_queue: Annotated[int, typer.Option(help="searches and additions that may wait for the network; "
                                                      "more get 503 with Retry-After")] = 16,
          allow_host: Annotated[Optional[list[str]], typer.Option(help="another name this server may be reached by "
                                                                       "(the Host header a browser sends), beside "
                                                                       "localhost, 127.0.0.1, ::1 and --host; repeatable")] = None,
          header_timeout: Annotated[float, typer.Option(help="seconds a client has to send a request's header")] = 10.0,
          body_timeout: Annotated[float, typer.Option(help="seconds a client has to send a request's body (an upload)")] = 60.0,
          max_connections: Annotated[int, typer.Option(help="open connections at most (past it the oldest one still "
                                                            "sending its header is closed)")] = 200) -> None:
    """Serve an index: a web page at / (drop an image, see its matches), the HTTP API and its
    docs at /docs. Set LAYERSEEK_TOKEN to allow adding and removing images over HTTP. Only requests
    for the names it serves are answered (others get 400: a web page elsewhere cannot reach it by
    rebinding a name to this machine); give --allow-host for a name of your own."""
    import socket

    import uvicorn

    from ..progress import catching_up_bar
    from ..server.app import allowed_host_names, create_app
    from ..server.client import announce, local_url, new_key, running_server, withdraw
    from ..server.connections import guarded_protocol

    for name, value, low in (("--header-timeout", header_timeout, 0.1), ("--body-timeout", body_timeout, 0.1),
                             ("--max-connections", max_connections, 1), ("--port", port, 0), ("--max-queue", max_queue, 0),
                             ("--max-upload-mb", max_upload_mb, 0.001), ("--shortlist", shortlist, 1)):
        if value < low:
            fail(f"{name} {value}: must be at least {low}")
    other = running_server(index_path)  # started twice (another terminal): one network's memory, not two
    if other is not None:
        fail(f"{index_path}: served already at {other.url}/ (pid {other.pid}); open that, or stop it first")
    key = new_key()
    try:
        api = create_app(index_path, max_upload=int(max_upload_mb * 1024 * 1024), threads=threads,
                         rerank_with=rerank_with, shortlist=shortlist, max_queue=max_queue,
                         allowed_hosts=allowed_host_names(host, allow_host or []), local_key=key, warm=True,
                         on_stop=lambda: withdraw(index_path, key), catching_up=catching_up_bar(base.err_console))
    except LayerseekError as e:
        fail(str(e))
    try:  # bound before "serving at" is printed: a port in use is said as such, not after the claim
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                    reuse_port=False, backlog=LISTEN_BACKLOG)
    except OSError as e:
        fail(f"{host}:{port}: cannot listen there ({e.strerror or e}); choose another --port or --host")
    base.console.print(f"serving {index_path} at http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}/  "
                       "(API docs: /docs)", highlight=False, soft_wrap=True)  # one line: a URL broken in two opens nothing
    others = reachable_at(host, sock.getsockname()[1])
    if others:  # 0.0.0.0 opens nothing on a phone: the addresses it can open
        base.console.print(f"  from another device on this network: {' or '.join(others)}", highlight=False,
                           soft_wrap=True)
    config = uvicorn.Config(api, log_level="warning",
                            http=guarded_protocol(header_timeout, body_timeout, max_connections))
    # `layerseek search` of this index finds the server here and sends its photos to it
    announce(index_path, local_url(host, sock.getsockname()[1]), key)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        withdraw(index_path, key)
