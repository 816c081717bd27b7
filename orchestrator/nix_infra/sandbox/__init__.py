"""The sandbox: a local stand-in for a Hetzner project, to try and rehearse the whole pipeline.

`nix-infra sandbox up` starts, in one background process (sandbox.daemon), the fake Hetzner API,
a local server (sandbox.fleet: sshd in its own mount namespace with its own Nix store) for each
server it creates, and a real etcd with the cluster's PKI where the ctrl node's etcd would answer.
The repo records where they are under `.nix-infra/sandbox/`; while that holds a running sandbox,
every command in the repo targets it (sandbox.options). What the nodes run are small stand-in
systems built with plain Nix from each node's manifest entry (sandbox.fleet.FLAKE), not NixOS.
"""
