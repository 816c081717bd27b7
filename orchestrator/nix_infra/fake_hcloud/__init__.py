"""A stateful fake of the Hetzner Cloud API, for tests and local experiments.

It follows the public API's shapes (servers with status transitions driven by
actions, networks and subnets, firewalls with label-selector targets,
placement groups, SSH keys, actions, label selectors, pagination, the error
shape) and has fault knobs: 429 bursts, 5xx, slow actions, failing actions, a
crash after N calls. Run standalone with `python -m nix_infra.fake_hcloud`.
"""

from nix_infra.fake_hcloud.server import FakeHcloud
from nix_infra.fake_hcloud.state import ApiError, Faults

__all__ = ["ApiError", "FakeHcloud", "Faults"]
