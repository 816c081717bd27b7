# Flake checks. Without a VM: the lib's named tests, the example manifest
# against its JSON schema, the orchestrator package (which runs its unit
# tests), and eval-all (every node of the example clusters evaluates). NixOS
# VM tests (need KVM): mesh, overlay, credentials, app-modules, first-install. None of them can run in
# nix-infra's own CI machine (no nixpkgs there); .github/workflows/ runs them.
{ pkgs, self, infraLib, disko }:
let
  inherit (pkgs) lib;
  results = import ../lib/tests;
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
  # Evaluated at check time (as flake-parts dev/tests): a failure names the tests.
  lib-tests =
    if results.failures == [ ] then
      pkgs.runCommand "nix-infra-lib-tests" { } "echo ${toString results.total} lib tests passed > $out"
    else
      throw "nix-infra lib tests failed: ${builtins.toJSON results.failures}";

  example-manifest =
    pkgs.runCommand "nix-infra-example-manifest"
      {
        nativeBuildInputs = [ pkgs.check-jsonschema ];
        manifest = builtins.toJSON example.manifest;
        passAsFile = [ "manifest" ];
      }
      ''
        check-jsonschema --schemafile ${../docs/manifest.schema.json} "$manifestPath"
        cp "$manifestPath" $out
      '';

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
