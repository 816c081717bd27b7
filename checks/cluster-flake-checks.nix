# The checks of a cluster flake (mkClusterFlake's checks.<system>, run by
# `nix flake check` in a cluster repo's CI, templates/cluster/.github): every
# node's NixOS system evaluates with no warning (its toplevel's drvPath:
# option types and assertions fail here, nothing is built), nix-infra's lib
# tests pass, and the manifest validates against nix-infra's JSON schema.
{ pkgs, nixosConfigurations, manifest }:
let
  lines = builtins.attrValues (
    builtins.mapAttrs (
      name: sys:
      if sys.config.warnings != [ ] then
        throw "node ${name}: evaluation warnings:\n${builtins.concatStringsSep "\n" sys.config.warnings}"
      else
        "${name} ${builtins.unsafeDiscardStringContext sys.config.system.build.toplevel.drvPath}"
    ) nixosConfigurations
  );
  libTests = import ../lib/tests;
in
{
  nodes-evaluate = pkgs.writeText "nix-infra-nodes-evaluate" (builtins.concatStringsSep "\n" lines + "\n");
  lib-tests =
    if libTests.failures == [ ] then
      pkgs.writeText "nix-infra-lib-tests" "${toString libTests.total} lib tests passed\n"
    else
      throw "nix-infra lib tests failed: ${builtins.toJSON libTests.failures}";
  manifest-schema =
    pkgs.runCommand "nix-infra-manifest-schema"
      {
        nativeBuildInputs = [ pkgs.check-jsonschema ];
        manifest = builtins.toJSON manifest;
        passAsFile = [ "manifest" ];
      }
      ''
        check-jsonschema --schemafile ${../docs/manifest.schema.json} "$manifestPath"
        cp "$manifestPath" $out
      '';
}
