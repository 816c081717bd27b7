# A generic container app: what modules/apps.nix runs for any app with an
# `image`, plus a persistent data directory, extra environment, command and
# the user the container runs as. Add it to every node (mkClusterFlake
# `modules`); it acts only where an app it configures is placed.
#
#   nixInfra.containerApps.api = {
#     dataDir = "/var/lib/api";        # on the node; /data in the container
#     user = "1000:1000";              # the image's USER, numerically: it owns /run/secrets/* and dataDir
#     environment.LOG_LEVEL = "info";
#     cmd = [ "--serve" ];
#   };
#
# The top-level keys of `config` are fixed; which apps it touches is decided
# inside each value (a `config` whose shape depended on config would recurse).
{ config, lib, ... }:
let
  cfg = config.nixInfra.containerApps;
  # the settings of the container apps placed on this node
  hosted = lib.filterAttrs (name: _: config.nixInfra.apps ? ${name} && config.nixInfra.apps.${name}.image != null) cfg;
  inherit (lib) mkOption types;

  # a normalised absolute path: no ".", "..", "//" or trailing "/"
  absPath = "(/[A-Za-z0-9_][A-Za-z0-9._-]*)+";
  under = dirs: p: lib.any (d: p == d || lib.hasPrefix "${d}/" p) dirs;
  # a numeric uid[:gid] a container can run as (no leading zeros, at most 4294967294)
  uidGid = types.addCheck (types.strMatching "(0|[1-9][0-9]{0,9})(:(0|[1-9][0-9]{0,9}))?") (
    u: lib.all (n: lib.toInt n <= 4294967294) (lib.splitString ":" u)
  ) // { description = "numeric uid[:gid] (each at most 4294967294)"; };
in
{
  # standalone: the apps placed on this node (nixInfra.apps)
  imports = [ ../modules/apps.nix ];

  options.nixInfra.containerApps = mkOption {
    default = { };
    description = "Extra settings of container apps (by app name), applied on the nodes that run them.";
    type = types.attrsOf (types.submodule {
      options = {
        dataDir = mkOption {
          # the directory is created and chowned to `user`: never a system directory
          type = types.nullOr (
            types.addCheck (types.strMatching absPath) (under [ "/var/lib" "/srv" "/mnt" "/data" ])
            // { description = "a normalised absolute path below /var/lib, /srv, /mnt or /data"; }
          );
          default = null;
          example = "/var/lib/api";
          description = "A directory on the node kept across restarts and deploys, mounted at `mountPath`, owned by `user`.";
        };
        mountPath = mkOption {
          type =
            types.addCheck (types.strMatching absPath) (p: !(under [ "/proc" "/sys" "/dev" "/run/secrets" ] p))
            // { description = "a normalised absolute path in the container, not below /proc, /sys, /dev or /run/secrets"; };
          default = "/data";
          description = "Where dataDir appears in the container.";
        };
        user = mkOption {
          type = types.nullOr uidGid;
          default = null;
          example = "1000:1000";
          description = ''
            The uid[:gid] the container runs as (podman --user), numerically: the
            image's USER when it is not root. It owns the app's secrets at
            /run/secrets/<name> (mode 0400) and its dataDir. null: the image's
            own USER runs, and secrets are readable by root only.
          '';
        };
        environment = mkOption { type = types.attrsOf types.str; default = { }; description = "Extra environment variables."; };
        cmd = mkOption { type = types.listOf types.str; default = [ ]; description = "Arguments to the image's entrypoint."; };
      };
    });
  };

  config = {
    virtualisation.oci-containers.containers = lib.mapAttrs' (name: c: lib.nameValuePair config.nixInfra.apps.${name}.containerName {
      environment = c.environment;
      cmd = c.cmd;
      user = c.user;
      volumes = lib.optional (c.dataDir != null) "${c.dataDir}:${c.mountPath}";
    }) hosted;

    systemd.tmpfiles.rules = lib.concatLists (
      lib.mapAttrsToList (
        _: c:
        let
          uid = if c.user == null then "root" else lib.head (lib.splitString ":" c.user);
          gid = if c.user == null then "root" else lib.last (lib.splitString ":" c.user);
        in
        lib.optional (c.dataDir != null) "d ${c.dataDir} 0750 ${uid} ${gid} -"
      ) hosted
    );
  };
}
