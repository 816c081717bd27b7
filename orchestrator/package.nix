# The orchestrator as a Nix package (the flake's packages.default), called with a Python
# package set's callPackage (pkgs.python3Packages.callPackage).
{
  lib,
  callPackage,
  buildPythonApplication,
  setuptools,
  bcrypt,
  click,
  cryptography,
  fabric,
  grpcio,
  hcloud,
  protobuf,
  requests,
  rich,
  urllib3,
  nix,
  nixos-anywhere,
  openssh,
  pytestCheckHook,
  hypothesis,
  jsonschema,
}:
let
  # not in nixpkgs: packaged here from their PyPI release files (nix/, docs/dependencies.md)
  inherit (import ./nix/python-packages.nix { inherit callPackage; }) cslab-etcd3 pyrage;
in
buildPythonApplication {
  pname = "nix-infra";
  version = "0.1.0";
  pyproject = true;
  src = lib.cleanSource ./.;

  build-system = [ setuptools ];
  # exactly pyproject.toml's [project.dependencies] (tests/test_packaging.py checks it)
  dependencies = [
    bcrypt
    click
    cryptography
    cslab-etcd3
    fabric
    grpcio
    hcloud
    protobuf
    pyrage
    requests
    rich
    urllib3
  ];

  # OpenSSH and nixos-anywhere (pinned with nixpkgs) come first on PATH; the operator's
  # own nix is preferred over ours for build and copy, so its settings apply.
  makeWrapperArgs = [
    "--prefix" "PATH" ":" (lib.makeBinPath [ openssh nixos-anywhere ])
    "--suffix" "PATH" ":" (lib.makeBinPath [ nix ])
  ];

  nativeCheckInputs = [ pytestCheckHook hypothesis jsonschema ];
  # The unit and fake-API tests run in the sandbox; tests that need the
  # lib's manifests (nix-instantiate) skip themselves there.
  enabledTestPaths = [ "tests" ];

  meta = {
    description = "nix-infra orchestrator: plan, provision and deploy NixOS clusters on Hetzner Cloud";
    mainProgram = "nix-infra";
    license = lib.licenses.mit;
  };
}
