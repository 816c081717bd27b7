"""The local fleet of the end-to-end tests: the sandbox's own (nix_infra.sandbox.fleet), one implementation."""

from __future__ import annotations

from nix_infra.sandbox.fleet import (
    FLAKE,
    NIX_DAEMON,
    NIXOS_ANYWHERE,
    SSH_PORT,
    SWITCH,
    SYSTEMCTL,
    SYSTEMD_RUN,
    FakeFleet,
    FakeServer,
    host_key_from_user_data,
    install_stand_ins,
    set_generation,
    write_cluster_flake,
)

__all__ = [
    "FLAKE",
    "NIXOS_ANYWHERE",
    "NIX_DAEMON",
    "SSH_PORT",
    "SWITCH",
    "SYSTEMCTL",
    "SYSTEMD_RUN",
    "FakeFleet",
    "FakeServer",
    "host_key_from_user_data",
    "install_stand_ins",
    "set_generation",
    "write_cluster_flake",
]
