{
  description = "A nix-infra cluster";

  inputs.nix-infra.url = "github:OWNER/nix-infra";

  outputs =
    { nix-infra, ... }:
    nix-infra.lib.mkCluster {
      spec = import ./cluster.nix;
      # Per-node NixOS modules, e.g. worker001 = [ ./app_modules/api.nix ];
      modules = { };
    }
    // {
      # `nix run .#deploy -- plan` and friends.
      inherit (nix-infra) apps;
    };
}
