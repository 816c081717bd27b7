{
  description = "A nix-infra cluster";

  # Where nix-infra comes from. OWNER is a placeholder: put the GitHub owner of the nix-infra
  # repository you use (yours or a fork), or a local checkout instead:
  #   inputs.nix-infra.url = "path:/abs/path/to/nix-infra";
  # then `nix flake lock` (or `nix flake update nix-infra` after changing it).
  inputs.nix-infra.url = "github:OWNER/nix-infra";

  outputs =
    { nix-infra, ... }:
    nix-infra.lib.mkClusterFlake {
      cluster = ./cluster.nix;
      # IPv6 addresses and more, as `nix-infra provision` recorded them
      facts = ./facts;
      # NixOS modules for every node; an app module acts only where its app runs
      modules = [
        nix-infra.appModules.container
        ./app_modules/api.nix
      ];
      # modules for single nodes, e.g. worker001 = [ ./worker001-extra.nix ];
      nodeModules = { };
    }
    // {
      # `nix run .#deploy -- plan` and friends
      inherit (nix-infra) apps;
    };
}
