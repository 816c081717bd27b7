"""`python -m nix_infra.fake_hcloud --port PORT`: the fake Hetzner API, standalone.

Run it with the repo's .venv (`./bin/setup`, then `.venv/bin/python -m nix_infra.fake_hcloud` or,
with the venv activated, `python -m nix_infra.fake_hcloud`). With --background it returns once it
listens and prints its process id, so the next command can use it at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from nix_infra.fake_hcloud.server import FakeHcloud


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nix_infra.fake_hcloud",
        description="A stateful fake of the Hetzner Cloud API on 127.0.0.1. Point nix-infra at it with "
        "HCLOUD_ENDPOINT=http://127.0.0.1:PORT/v1 HCLOUD_TOKEN=TOKEN. Fault knobs: "
        "POST /__fake__/faults, e.g. '{\"rate_limit_burst\": 5}'.",
    )
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0 = any)")
    parser.add_argument("--token", default="fake-token", help="the one API token accepted (default fake-token)")
    parser.add_argument(
        "--background",
        action="store_true",
        help="serve from a background process; return once it listens, printing its process id (stop: kill PID)",
    )
    args = parser.parse_args()
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: a port is 0 (any) to 65535")
    try:
        fake = FakeHcloud(token=args.token, port=args.port)  # listens from here on
    except OSError as e:
        sys.exit(f"fake_hcloud: cannot listen on 127.0.0.1:{args.port}: {e.strerror}")
    print(f"fake Hetzner Cloud API on {fake.endpoint} (token {args.token!r})", file=sys.stderr, flush=True)
    if args.background:
        pid = os.fork()
        if pid:
            print(pid, flush=True)
            os._exit(0)
        os.setsid()  # not stopped with the shell's job
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    with contextlib.suppress(KeyboardInterrupt):
        fake.serve_forever()


if __name__ == "__main__":
    main()
