# Volumes: the node's Hetzner volumes (lib: nodes.<n>.config.volumes, each
# volume's id from facts/<node>.json), mounted at their mountpoints, and the
# app data directories put on them.
#
# Each volume is mounted from /dev/disk/by-id/scsi-0HC_Volume_<id> with `nofail`
# (a missing volume does not stop the boot; what needs it does not start). It is
# formatted only when blank: a oneshot the mount requires runs
# modules/scripts/format-volume.sh, which runs mkfs only when blkid finds no
# signature and the device's first MiB is zeros; it never reformats. (Upstream's
# fileSystems.<n>.autoFormat is not used: it formats whatever systemd-makefs
# finds no file system on, and it is tied to the fsType.)
#
# An app with a volume (nixInfra.apps.<app>.volume) has its unit require the
# volume's mount (RequiresMountsFor=), so it never starts on an empty directory
# of the root disk. An app module puts the app's data directory on the volume
# with nixInfra.volumeDirs.<app>: <mountpoint>/<subdir> (created for the app's
# user) bind-mounted at the path the service uses (e.g. /var/lib/postgresql),
# so upstream's unit, its state directory and its hardening stay as they are.
{ config, lib, pkgs, ... }:
let
  cfg = config.nixInfra.volumes;
  apps = config.nixInfra.apps;
  dirs = config.nixInfra.volumeDirs;
  inherit (lib) mapAttrs' mapAttrsToList mkIf mkMerge mkOption nameValuePair types;

  device = v: "/dev/disk/by-id/scsi-0HC_Volume_${toString v.id}";
  serviceName = unit: lib.removeSuffix ".service" unit;
  formatUnit = name: "nix-infra-volume-format-${name}";
  dirUnit = app: "nix-infra-volume-dir-${app}";
  volumeOf = app: cfg.${apps.${app}.volume};
  withVolume = lib.filterAttrs (_: a: a.volume != null) apps;
  known = lib.filterAttrs (_: v: v.id != null) cfg;

  volumeOptions = {
    options = {
      size = mkOption { type = types.ints.between 10 10240; description = "Size in GB (Hetzner: 10 to 10240)."; };
      mountpoint = mkOption {
        type = types.strMatching "/[A-Za-z0-9._/-]+";
        description = "Where the volume is mounted.";
      };
      filesystem = mkOption { type = types.enum [ "ext4" "xfs" ]; default = "ext4"; description = "File system created on a blank volume."; };
      id = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "The Hetzner volume's id (facts/<node>.json volumes.<name>.id, written by provision); its device is /dev/disk/by-id/scsi-0HC_Volume_<id>.";
      };
    };
  };

  dirOptions = {
    options = {
      path = mkOption { type = types.strMatching "/[A-Za-z0-9._/-]+"; description = "Where the service expects its data (bind-mounted from the volume)."; };
      subdir = mkOption { type = types.strMatching "[A-Za-z0-9._-]+"; description = "The directory on the app's volume."; };
      user = mkOption { type = types.str; description = "Owner of the directory."; };
      group = mkOption { type = types.str; description = "Group of the directory."; };
      mode = mkOption { type = types.strMatching "0[0-7]{3}"; default = "0750"; description = "Mode of the directory."; };
    };
  };
in
{
  # standalone: the apps placed on this node
  imports = [ ./apps.nix ];

  options.nixInfra.volumes = mkOption {
    type = types.attrsOf (types.submodule volumeOptions);
    default = { };
    description = "The node's volumes (from lib and the facts), by name.";
  };

  # merged into modules/apps.nix's submodule
  options.nixInfra.apps = mkOption {
    type = types.attrsOf (types.submodule {
      options.volume = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "The volume (nixInfra.volumes.<name>) the app's data lives on; its unit requires the volume's mount.";
      };
    });
  };

  options.nixInfra.volumeDirs = mkOption {
    type = types.attrsOf (types.submodule dirOptions);
    default = { };
    description = "By app: its data directory, put on the app's volume (an app module sets it; ignored for an app without a volume).";
  };

  config = mkMerge [
    # a volume whose id is not known yet (no provision since it was added) is not
    # mounted; the system still evaluates (a cluster repo's CI runs before provision),
    # and its apps refuse to start (AssertPathIsMountPoint below) instead of writing to
    # the root disk
    (mkIf (known != { }) {
      fileSystems = mapAttrs' (name: v: nameValuePair v.mountpoint {
        device = device v;
        fsType = v.filesystem;
        options = [ "nofail" "x-systemd.requires=${formatUnit name}.service" ];
      }) known;

      systemd.services = mapAttrs' (name: v: nameValuePair (formatUnit name) {
        description = "nix-infra: a file system on volume ${name} if it is blank (never reformats)";
        unitConfig.DefaultDependencies = false;
        path = [ pkgs.util-linux pkgs.coreutils pkgs.diffutils pkgs.e2fsprogs pkgs.xfsprogs ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${pkgs.bash}/bin/bash ${./scripts/format-volume.sh} ${lib.escapeShellArgs [ (device v) v.filesystem "90" ]}";
        };
      }) known;
    })
    (mkIf (withVolume != { }) {
      assertions = mapAttrsToList (name: a: {
        assertion = cfg ? ${a.volume};
        message = "nixInfra.apps.${name}.volume: no volume ${a.volume} on this node (volumes: ${lib.concatStringsSep ", " (lib.attrNames cfg)}).";
      }) withVolume;

      systemd.services = mkMerge [
        # the app's unit needs its volume mounted (and its data directory, when put there)
        (mapAttrs' (name: a: nameValuePair (serviceName a.unit) {
          unitConfig.RequiresMountsFor = [ (volumeOf name).mountpoint ] ++ lib.optional (dirs ? ${name}) dirs.${name}.path;
          # never on the root disk: not started unless the volume is mounted there
          unitConfig.AssertPathIsMountPoint = (volumeOf name).mountpoint;
        }) (lib.filterAttrs (_: a: cfg ? ${a.volume}) withVolume))
        # the data directory on the volume, made before it is bind-mounted
        (mapAttrs' (app: d: nameValuePair (dirUnit app) {
          description = "nix-infra: ${app}'s data directory on volume ${apps.${app}.volume}";
          unitConfig.DefaultDependencies = false;
          unitConfig.RequiresMountsFor = [ (volumeOf app).mountpoint ];
          unitConfig.AssertPathIsMountPoint = (volumeOf app).mountpoint;
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            ExecStart = "${pkgs.coreutils}/bin/install -d ${lib.escapeShellArgs [ "-m" d.mode "-o" d.user "-g" d.group "--" "${(volumeOf app).mountpoint}/${d.subdir}" ]}";
          };
        }) (lib.filterAttrs (app: _: withVolume ? ${app} && known ? ${apps.${app}.volume}) dirs))
      ];

      fileSystems = mapAttrs' (app: d: nameValuePair d.path {
        device = "${(volumeOf app).mountpoint}/${d.subdir}";
        fsType = "none";
        options = [ "bind" "nofail" "x-systemd.requires=${dirUnit app}.service" "x-systemd.requires-mounts-for=${(volumeOf app).mountpoint}" ];
      }) (lib.filterAttrs (app: _: withVolume ? ${app} && known ? ${apps.${app}.volume}) dirs);
    })
  ];
}
