{
  description = "nix-infra example: every node type and app module";

  inputs.nix-infra.url = "path:../..";

  outputs =
    { nix-infra, ... }:
    nix-infra.lib.mkClusterFlake (
      {
        cluster = ./cluster.nix;
        facts = ./facts;
      }
      // import ./modules.nix nix-infra.appModules
    )
    // {
      inherit (nix-infra) apps;
    };
}
