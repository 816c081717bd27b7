# Flake checks that need no VM: the lib's named tests, the example manifest
# against its JSON schema, and the orchestrator package (which runs its own
# unit tests). NixOS VM tests join here with the capabilities they test.
{ pkgs, self, infraLib }:
let
  results = import ../lib/tests;
  example = infraLib.evalCluster (import ../lib/example.nix);
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

  orchestrator = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
}
