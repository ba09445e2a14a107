"""A small HTTP file server on 127.0.0.1 for download tests: serves byte strings by path, honours ``Range``, and
records every request. Started and stopped by the test (no outside network is ever touched)."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackFiles:
    """What the server serves (``files``: path -> bytes, ``content_type``) and what it was asked (``requests``: one
    ``(path, range header or None)`` per GET, ``bytes_sent`` in all)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.content_type = "application/octet-stream"
        self.requests: list[tuple[str, str | None]] = []
        self.bytes_sent = 0
        self.url = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                served.requests.append((self.path, self.headers.get("Range")))
                body = served.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", served.content_type)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])
                served.bytes_sent += len(body) - start

            def log_message(self, *args) -> None:
                pass

        return Handler


@contextlib.contextmanager
def serve_files() -> Iterator[LoopbackFiles]:
    """A running loopback server (its base URL in ``.url``), shut down on exit."""
    files = LoopbackFiles()
    server = ThreadingHTTPServer(("127.0.0.1", 0), files.handler())
    server.timeout = 5
    files.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    """A loopback URL nothing listens on (a port bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
