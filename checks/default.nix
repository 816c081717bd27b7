# Flake checks. Without a VM: the lib's named tests, the example manifest
# against its JSON schema, the orchestrator package (which runs its unit
# tests), and eval-all (every node of the example clusters evaluates). NixOS
# VM tests (need KVM): mesh, overlay, credentials, app-modules, first-install. None of them can run in
# nix-infra's own CI machine (no nixpkgs there); .github/workflows/ runs them.
{ pkgs, self, infraLib, disko }:
let
  inherit (pkgs) lib;
  clusterChecks = import ./cluster-flake-checks.nix {
    inherit pkgs;
    nixosConfigurations = { };
    manifest = example.manifest;
  };
  example = infraLib.evalCluster (import ../lib/example.nix);

  # every node system of the example clusters, as their flakes build them
  exampleClusters = {
    template = self.lib.mkClusterFlake { cluster = ../templates/cluster/cluster.nix; };
    demo = self.lib.mkClusterFlake { cluster = ../lib/example.nix; };
    full = self.lib.mkClusterFlake (
      { cluster = ../examples/full/cluster.nix; facts = ../examples/full/facts; }
      // import ../examples/full/modules.nix self.appModules
    );
  };
  drvPaths = lib.concatLists (
    lib.mapAttrsToList (
      cluster: flake:
      lib.mapAttrsToList (
        node: system: "${cluster}.${node} ${builtins.unsafeDiscardStringContext system.config.system.build.toplevel.drvPath}"
      ) flake.nixosConfigurations
    ) exampleClusters
  );
in
{
  # the lib's named tests and the example manifest against its schema: the same checks a
  # cluster flake gets from mkClusterFlake (cluster-flake-checks.nix)
  inherit (clusterChecks) lib-tests;
  example-manifest = clusterChecks.manifest-schema;

  # Evaluates every node's toplevel (not built): option typos, missing
  # options, failed assertions all fail here.
  eval-all = pkgs.writeText "nix-infra-eval-all" (lib.concatStringsSep "\n" drvPaths + "\n");

  orchestrator = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
}
// lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
  mesh = import ./mesh.nix { inherit pkgs self disko; };
  overlay = import ./overlay.nix { inherit pkgs self disko; };
  credentials = import ./credentials.nix { inherit pkgs self disko; };
  app-modules = import ./app-modules.nix { inherit pkgs self disko; };
  first-install = import ./first-install.nix { inherit pkgs self disko; };
}
