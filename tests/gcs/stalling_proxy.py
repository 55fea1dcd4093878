"""An HTTP proxy in front of the local GCS server that holds one chosen request, and counts
what the server sends.

Lets a test stop a conversion at an exact point (e.g. just before the completion marker is
written) and kill it there: every request is forwarded unchanged to the real server except
the first POST (an upload, a copy) whose URL or body contains the chosen text, which is held
until `release()` and then answered with an error.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the killed client drops its connections; that is the point


class StallingProxy:
    def __init__(self, target_url: str, stall_on: str | None = None):
        self.target = urllib.parse.urlsplit(target_url)
        self.stall_on = stall_on.encode() if stall_on else None
        self.bytes_sent = 0  # response bodies, all requests
        self.requests = 0
        self.stalled = threading.Event()
        self._released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.requests += 1
                if proxy.stall_on and self.command == "POST" and not proxy.stalled.is_set() and (
                    proxy.stall_on in urllib.parse.unquote(self.path).encode()
                    or proxy.stall_on in body
                ):
                    proxy.stalled.set()
                    proxy._released.wait()
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(
                    proxy.target.hostname, proxy.target.port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                proxy.bytes_sent += len(data)
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StallingProxy:
        self._thread.start()
        return self

    def release(self) -> None:
        self._released.set()

    def __exit__(self, *exc) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
