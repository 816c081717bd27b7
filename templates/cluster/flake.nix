{
  description = "A nix-infra cluster";

  inputs.nix-infra.url = "github:OWNER/nix-infra";

  outputs =
    { nix-infra, ... }:
    nix-infra.lib.mkClusterFlake {
      cluster = ./cluster.nix;
      # IPv6 addresses and more, as `nix-infra provision` recorded them
      facts = ./facts;
      # NixOS modules for every node, e.g. nix-infra.appModules.postgresql
      modules = [ ];
      # per node, e.g. worker001 = [ ./app_modules/api.nix ];
      nodeModules = { };
    }
    // {
      # `nix run .#deploy -- plan` and friends
      inherit (nix-infra) apps;
    };
}
