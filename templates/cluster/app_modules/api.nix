# The app "api" of cluster.nix, beyond what nix-infra runs for every container
# app: its data directory, the user its image runs as, extra environment, an
# action. flake.nix adds it to every node; it acts only on the nodes lib placed
# the app on. Every app module follows this skeleton (as nix-infra's own
# appModules do): options under nixInfra.<yours>; `config` with fixed top-level
# keys, guarded by `config.nixInfra.apps ? <app>` (an attribute set of config
# shaped by config would recurse forever).
{ config, lib, ... }:
let
  cfg = config.nixInfra.api;
  hosted = config.nixInfra.apps ? ${cfg.app};
in
{
  options.nixInfra.api = {
    enable = lib.mkEnableOption "the api app's settings, on the nodes it is placed on" // { default = true; };
    app = lib.mkOption {
      type = lib.types.str;
      default = "api";
      description = "The app's name in cluster.nix.";
    };
    logLevel = lib.mkOption {
      type = lib.types.enum [ "debug" "info" "warn" "error" ];
      default = "info";
      description = "LOG_LEVEL of the container.";
    };
  };

  config.nixInfra.containerApps = lib.mkIf (cfg.enable && hosted) {
    # needs nix-infra.appModules.container (flake.nix adds it)
    ${cfg.app} = {
      dataDir = "/var/lib/${cfg.app}";
      # the image's USER, numerically: it owns /run/secrets/* and the data directory
      user = "1000:1000";
      environment.LOG_LEVEL = cfg.logLevel;
    };
  };
  # `nix-infra action worker001 api migrate`; installed only where the app runs
  # (nixInfra.apps.<app> itself is lib's: a module may not create it)
  config.nixInfra.appActions = lib.mkIf cfg.enable {
    # (the container of app <name> is app-<name>: nixInfra.apps.<name>.containerName)
    ${cfg.app}.migrate = "podman exec app-${cfg.app} /app/migrate";
  };
}
