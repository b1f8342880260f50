"""``stephctl view``'s web server: the standard library's ``http.server``, loopback only, GET only.

Routes (all read-only; ``{m}`` a method, ``{k}`` a fold, ``{p}`` a patient, ``{s}`` a slide id,
each URL-encoded):

- ``/`` the page, ``/static/...`` its script, style and OpenSeadragon (shipped in the package);
- ``/api/target``: the target and its methods;
- ``/api/patients?method={m}``: the test patients with fold, risk and group;
- ``/api/patient?method={m}&patient={p}``: the patient panel (comparison, slides, transfer);
- ``/api/top?method={m}&fold={k}&patient={p}``: the most attended patches;
- ``/overlay.png?method={m}&fold={k}&patient={p}&slide={s}``: the attention overlay;
- ``/dzi/{s}.dzi`` and ``/dzi/{s}_files/{level}/{col}_{row}.jpeg``: the deep-zoom slide;
- ``/patch.jpeg?slide={s}&x=&y=``: one patch.

Any other method than GET/HEAD is refused (405), and the server refuses to bind anything but a
loopback address: the pages show patient data.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigError, StephError
from .data import ProjectView

log = logging.getLogger(__name__)

STATIC = resources.files("steph.view") / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
_TILE = re.compile(r"^/dzi/(?P<slide>[^/]+)_files/(?P<level>\d+)/(?P<col>\d+)_(?P<row>\d+)\.jpeg$")
_DZI = re.compile(r"^/dzi/(?P<slide>[^/]+)\.dzi$")


def check_loopback(host: str) -> None:
    """Refuse any address that is not loopback (the viewer shows patient data, unauthenticated).

    Raises:
        ConfigError: ``host`` is not ``localhost`` or a loopback IP address.
    """
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"stephctl view only listens on the loopback interface, not on {host!r}",
            hint="use 127.0.0.1 and, from another machine, an SSH tunnel: ssh -L 8765:127.0.0.1:8765 HOST",
        )


class ViewServer(ThreadingHTTPServer):
    """The HTTP server with the project it shows; ``tiles`` counts tile requests per level."""

    daemon_threads = True

    def __init__(self, view: ProjectView, host: str, port: int) -> None:
        check_loopback(host)
        if ":" in host:  # an IPv6 loopback such as ::1: the class default is IPv4
            self.address_family = socket.AF_INET6
        self.view = view
        self.tiles: dict[int, int] = {}
        self.tiles_lock = threading.Lock()
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode("ascii") if isinstance(host, bytes) else host  # bytes only for AF_UNIX
        if ":" in name:  # an IPv6 address goes in brackets in a URL (RFC 3986)
            name = f"[{name}]"
        return f"http://{name}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: ViewServer
    server_version = "stephctl-view"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            self._route(unquote(parts.path) if not parts.path.startswith("/dzi/") else parts.path, query)
        except StephError as exc:
            self._send_json({"error": exc.message, "hint": exc.hint}, HTTPStatus.NOT_FOUND)
        except (KeyError, ValueError) as exc:
            self._send_json({"error": f"bad request: {exc}"}, HTTPStatus.BAD_REQUEST)

    def _refuse(self) -> None:
        self._send(b"read-only viewer\n", "text/plain", HTTPStatus.METHOD_NOT_ALLOWED)

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def _route(self, path: str, q: dict[str, str]) -> None:
        view = self.server.view
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        if path == "/api/target":
            return self._send_json({"target": view.target, "methods": view.methods})
        if path == "/api/patients":
            return self._send_json([asdict(r) for r in view.patients(q["method"])])
        if path == "/api/patient":
            return self._send_json(view.patient(q["method"], q["patient"]))
        if path == "/api/top":
            return self._send_json(view.top_patches(q["method"], int(q["fold"]), q["patient"]))
        if path == "/overlay.png":
            png = view.overlay_png(q["method"], int(q["fold"]), q["patient"], q["slide"])
            return self._send(png, "image/png")
        if path == "/patch.jpeg":
            return self._send(view.patch_jpeg(q["slide"], int(q["x"]), int(q["y"])), "image/jpeg")
        if match := _DZI.match(path):
            return self._send(view.dzi(unquote(match["slide"])).encode(), "application/xml")
        if match := _TILE.match(path):
            level = int(match["level"])
            data = view.tile(unquote(match["slide"]), level, int(match["col"]), int(match["row"]))
            with self.server.tiles_lock:
                self.server.tiles[level] = self.server.tiles.get(level, 0) + 1
            return self._send(data, "image/jpeg")
        self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)

    def _static(self, name: str) -> None:
        if ".." in name.split("/") or name.startswith("/"):
            return self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)
        resource = STATIC.joinpath(*name.split("/"))
        if not resource.is_file():
            return self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        self._send(resource.read_bytes(), _TYPES.get(suffix, "application/octet-stream"))

    def _send_json(self, value: object, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(value, allow_nan=False, default=float).encode(), "application/json", status)

    def _send(self, body: bytes, kind: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store" if kind == "application/json" else "max-age=300")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def serve(
    view: ProjectView,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``view`` until interrupted (``KeyboardInterrupt`` ends it cleanly).

    Args:
        host: a loopback address (anything else is refused).
        port: TCP port; 0 picks a free one.
        on_ready: called with the page's URL once the server listens.

    Raises:
        ConfigError: ``host`` is not loopback, or the port is taken.
    """
    try:
        server = ViewServer(view, host, port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="pick another port with --port"
        ) from exc
    with server:
        if on_ready is not None:
            on_ready(server.url)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
