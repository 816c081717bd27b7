"""The fake's HTTP face: routes, auth, pagination, rate-limit headers, faults.

Control endpoints (no auth), for driving a standalone fake:
  GET  /__fake__/state           every resource, as the API would list them
  POST /__fake__/faults          set fault knobs, e.g. {"rate_limit_burst": 5}
  POST /__fake__/reset           forget every resource and knob
  GET  /__fake__/calls           the API calls made so far ([method, path] pairs)
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from nix_infra.fake_hcloud.state import ApiError, FakeState, Faults, Json, ServerHooks

KINDS = ("servers", "networks", "firewalls", "placement_groups", "ssh_keys", "volumes")
RATE_LIMIT = 3600


class FakeHcloud:
    """A stateful fake of the Hetzner Cloud API on 127.0.0.1, in a background thread."""

    def __init__(self, token: str = "fake-token", port: int = 0, hooks: ServerHooks | None = None) -> None:
        self.token = token
        self.hooks = hooks
        self.lock = threading.RLock()
        self.faults = Faults()
        self.state = FakeState(self.faults, hooks)
        self.calls: list[tuple[str, str]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeHcloud:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hcloud", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def reset(self) -> None:
        with self.lock:
            self.faults = Faults()
            self.state = FakeState(self.faults, self.hooks)
            self.calls.clear()

    def set_faults(self, **values: Any) -> None:
        with self.lock:
            self.faults.update(values)

    def snapshot(self) -> dict[str, list[Json]]:
        with self.lock:
            self.state.tick()
            return {kind: self.state.list_items(kind, {}) for kind in (*KINDS, "actions")}

    # ---- request handling ----------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

        return Handler

    def _send(
        self, h: BaseHTTPRequestHandler, status: int, body: Json | None, headers: dict[str, str] | None = None
    ) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _drop(self, h: BaseHTTPRequestHandler) -> None:
        """A crashed API: close the connection without an answer."""
        h.close_connection = True
        try:
            h.wfile.flush()
            h.connection.shutdown(2)
        except OSError:
            pass

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        if url.path.startswith("/__fake__/"):
            self._control(h, method, url.path, raw)
            return
        if self.faults.latency_seconds:
            time.sleep(self.faults.latency_seconds)  # outside the lock: requests overlap as they would
        with self.lock:
            self.calls.append((method, url.path))
            crash = self.faults.crash_after
            if crash is not None:
                if crash <= 0:
                    if self.faults.crash_loses_response:
                        self.faults.crash_loses_response = False
                        self._dispatch_safely(method, url.path, url.query, raw)
                    self._drop(h)
                    return
                self.faults.crash_after = crash - 1
            reset = str(math.ceil(time.time()) + self.faults.rate_limit_reset_seconds)
            limit_headers = {"RateLimit-Limit": str(RATE_LIMIT), "RateLimit-Reset": reset}
            if h.headers.get("Authorization") != f"Bearer {self.token}":
                err = ApiError("unauthorized", "unable to authenticate")
                self._send(h, err.status, err.body(), limit_headers | {"RateLimit-Remaining": "3599"})
                return
            if self.faults.rate_limit_burst > 0:
                self.faults.rate_limit_burst -= 1
                err = ApiError("rate_limit_exceeded", "limit of 3600 requests per hour reached")
                self._send(h, 429, err.body(), limit_headers | {"RateLimit-Remaining": "0"})
                return
            if self.faults.server_errors > 0:
                self.faults.server_errors -= 1
                code = "server_error" if self.faults.server_error_status == 500 else "service_error"
                err = ApiError(code, "the fake is having a bad moment")
                self._send(h, self.faults.server_error_status, err.body(), limit_headers)
                return
            status, body = self._dispatch_safely(method, url.path, url.query, raw)
            self._send(h, status, body, limit_headers | {"RateLimit-Remaining": "3599"})

    def _dispatch_safely(self, method: str, path: str, query: str, raw: bytes) -> tuple[int, Json | None]:
        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ApiError("json_error", "request body must be a JSON object")
        except json.JSONDecodeError:
            err = ApiError("json_error", "request body is not valid JSON")
            return err.status, err.body()
        try:
            self.state.tick()
            return self._dispatch(method, path, {k: v[-1] for k, v in parse_qs(query).items()}, body)
        except ApiError as err:
            return err.status, err.body()

    def _dispatch(self, method: str, path: str, query: dict[str, str], body: Json) -> tuple[int, Json | None]:
        s = self.state
        m = re.fullmatch(r"/v1/([a-z_]+)(?:/([0-9]+))?(?:/actions/([a-z_]+))?", path)
        if not m:
            raise ApiError("not_found", f"no route {method} {path}")
        kind, rid, sub = m.group(1), m.group(2), m.group(3)
        if kind == "actions" and method == "GET":
            if rid:
                return 200, {"action": _public_action(s.get("actions", rid))}
            return 200, self._page(s.list_items("actions", query), query, "actions", _public_action)
        if kind not in KINDS:
            raise ApiError("not_found", f"no route {method} {path}")
        creators: dict[str, Callable[[Json], Json]] = {
            "servers": s.create_server,
            "networks": s.create_network,
            "firewalls": s.create_firewall,
            "placement_groups": s.create_placement_group,
            "ssh_keys": s.create_ssh_key,
            "volumes": s.create_volume,
        }
        if rid is None:
            if method == "GET":
                return 200, self._page(s.list_items(kind, query), query, kind)
            if method == "POST":
                return 201, creators[kind](body)
        elif sub is None:
            if method == "GET":
                return 200, {kind[:-1]: s.render(kind, s.get(kind, rid))}
            if method == "PUT":
                return 200, s.update(kind, rid, body)
            if method == "DELETE":
                if kind == "servers":
                    return 200, s.delete_server(rid)
                if kind == "networks":
                    s.delete_network(rid)
                elif kind == "firewalls":
                    s.delete_firewall(rid)
                elif kind == "placement_groups":
                    s.delete_placement_group(rid)
                elif kind == "volumes":
                    s.delete_volume(rid)
                else:
                    s.ssh_keys.pop(s.get("ssh_keys", rid)["id"])
                return 204, None
        elif method == "POST":
            if kind == "servers":
                return 201, s.server_action(rid, sub, body)
            if kind == "firewalls":
                return 201, s.firewall_action(rid, sub, body)
            if kind == "networks":
                return 201, s.network_action(rid, sub, body)
            if kind == "volumes":
                return 201, s.volume_action(rid, sub, body)
        raise ApiError("not_found", f"no route {method} {path}")

    def _page(
        self, items: list[Json], query: dict[str, str], key: str, render: Callable[[Json], Json] | None = None
    ) -> Json:
        try:
            page = max(1, int(query.get("page", "1")))
            per_page = min(50, max(1, int(query.get("per_page", "25"))))
        except ValueError:
            raise ApiError("invalid_input", "page and per_page must be numbers") from None
        last = max(1, math.ceil(len(items) / per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        return {
            key: [render(i) for i in chunk] if render else chunk,
            "meta": {
                "pagination": {
                    "page": page,
                    "per_page": per_page,
                    "previous_page": page - 1 if page > 1 else None,
                    "next_page": page + 1 if page < last else None,
                    "last_page": last,
                    "total_entries": len(items),
                }
            },
        }

    def _control(self, h: BaseHTTPRequestHandler, method: str, path: str, raw: bytes) -> None:
        try:
            if path == "/__fake__/state" and method == "GET":
                self._send(h, 200, self.snapshot())
            elif path == "/__fake__/faults" and method == "POST":
                self.set_faults(**json.loads(raw or b"{}"))
                self._send(h, 200, {"faults": vars(self.faults)})
            elif path == "/__fake__/reset" and method == "POST":
                self.reset()
                self._send(h, 200, {})
            elif path == "/__fake__/calls" and method == "GET":
                with self.lock:
                    self._send(h, 200, {"calls": [list(c) for c in self.calls]})
            else:
                self._send(h, 404, ApiError("not_found", path).body())
        except ApiError as err:
            self._send(h, err.status, err.body())


def _public_action(action: Json) -> Json:
    return {k: v for k, v in action.items() if not k.startswith("_")}
