# The orchestrator as a Nix package (the flake's packages.default).
{
  lib,
  buildPythonApplication,
  setuptools,
  click,
  cryptography,
  hcloud,
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
buildPythonApplication {
  pname = "nix-infra";
  version = "0.1.0";
  pyproject = true;
  src = lib.cleanSource ./.;

  build-system = [ setuptools ];
  dependencies = [ click cryptography hcloud requests rich urllib3 ];

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
