"""nix-infra orchestrator: the Python half that talks to Hetzner, SSH, Nix and etcd.

The library layer (manifest, plan, providers, process, ...) knows nothing of
click; `nix_infra.cli` is the thin command-line layer on top.
"""

__version__ = "0.1.0"
