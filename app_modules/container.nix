# A generic container app: what modules/apps.nix runs for any app with an
# `image`, plus a persistent data directory, extra environment and command.
# Add it to every node (mkClusterFlake `modules`); it acts only where an app
# it configures is placed.
#
#   nixInfra.containerApps.api = {
#     dataDir = "/var/lib/api";        # on the node; /data in the container
#     environment.LOG_LEVEL = "info";
#     cmd = [ "--serve" ];
#   };
{ config, lib, ... }:
let
  cfg = config.nixInfra.containerApps;
  hosted = name: config.nixInfra.apps ? ${name} && config.nixInfra.apps.${name}.image != null;
  inherit (lib) mapAttrsToList mkIf mkMerge mkOption types;
in
{
  options.nixInfra.containerApps = mkOption {
    default = { };
    description = "Extra settings of container apps (by app name), applied on the nodes that run them.";
    type = types.attrsOf (types.submodule {
      options = {
        dataDir = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "/var/lib/api";
          description = "A directory on the node kept across restarts and deploys, mounted at `mountPath`.";
        };
        mountPath = mkOption { type = types.str; default = "/data"; description = "Where dataDir appears in the container."; };
        environment = mkOption { type = types.attrsOf types.str; default = { }; description = "Extra environment variables."; };
        cmd = mkOption { type = types.listOf types.str; default = [ ]; description = "Arguments to the image's entrypoint."; };
      };
    });
  };

  config = mkMerge (mapAttrsToList (name: c: mkIf (hosted name) {
    virtualisation.oci-containers.containers.${name} = {
      environment = c.environment;
      cmd = c.cmd;
      volumes = lib.optional (c.dataDir != null) "${c.dataDir}:${c.mountPath}";
    };
    systemd.tmpfiles.rules = lib.optional (c.dataDir != null) "d ${c.dataDir} 0750 root root -";
  }) cfg);
}
