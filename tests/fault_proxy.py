"""A loopback HTTP proxy in front of the S3 server that injects faults on demand.

Modes: ``pass`` forwards; ``down`` closes every connection without answering (a stopped
server, as the client sees it); ``error`` answers ``500 InternalError``; ``throttle``
answers ``503 SlowDown``. ``fail_next(n, mode)`` injects ``n`` faults then passes again;
``down_after(method, n)`` goes down once ``n`` requests of ``method`` have been forwarded.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERRORS = {
    "error": (500, "InternalError", "We encountered an internal error. Please try again."),
    "throttle": (503, "SlowDown", "Please reduce your request rate."),
}


class FaultProxy:
    def __init__(self, upstream: str):
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.mode = "pass"
        self.remaining = None  # faults left before passing again (None: until changed)
        self.forwarded: list[tuple[str, str]] = []
        self.faults = 0
        self._down_after = None
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail_next(self, n: int, mode: str) -> None:
        with self._lock:
            self.mode, self.remaining = mode, n

    def set_mode(self, mode: str) -> None:
        with self._lock:
            self.mode, self.remaining, self._down_after = mode, None, None

    def down_after(self, method: str, n: int) -> None:
        with self._lock:
            self._down_after = (method, sum(1 for m, _ in self.forwarded if m == method) + n)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _decide(self, method: str) -> str:
        with self._lock:
            if self._down_after and sum(1 for m, _ in self.forwarded if m == self._down_after[0]) >= self._down_after[1]:
                self.mode, self._down_after = "down", None
            mode = self.mode
            if mode != "pass":
                self.faults += 1
                if self.remaining is not None:
                    self.remaining -= 1
                    if self.remaining <= 0:
                        self.mode, self.remaining = "pass", None
            return mode

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mode = proxy._decide(self.command)
                if mode == "down":
                    self.close_connection = True
                    self.connection.close()
                    return
                if mode in ERRORS:
                    status, code, message = ERRORS[mode]
                    payload = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                headers = dict(self.headers.items())  # Host unchanged: it is part of the SigV4 signature
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                with proxy._lock:
                    proxy.forwarded.append((self.command, self.path))
                self.send_response(response.status, response.reason)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # a HEAD answer has no body but tells the object's length
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        return Handler
