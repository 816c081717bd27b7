"""`python -m nix_infra.fake_hcloud --port PORT`: the fake Hetzner API, standalone."""

from __future__ import annotations

import argparse
import contextlib
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
    args = parser.parse_args()
    fake = FakeHcloud(token=args.token, port=args.port)
    print(f"fake Hetzner Cloud API on {fake.endpoint} (token {args.token!r})", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        fake.serve_forever()


if __name__ == "__main__":
    main()
