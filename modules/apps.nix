# Apps on a node: for every app placed here (lib: nodes.<n>.config.apps), its
# container (virtualisation.oci-containers, podman, host network so that
# 127.0.0.1 reaches the mesh) unless a native service runs it, the consumer
# environment (<PREFIX>_HOST/PORT/...), its action scripts, and a registration
# unit bound to the app's unit that announces the instance in etcd while its
# health check passes (modules/scripts/register-instance.sh, the script the
# tests run).
#
# Secrets: a container's unit loads them (LoadCredentialEncrypted=, from the
# files the orchestrator delivers) and hands them to the container as
# /run/secrets/<name>, owned by the container's user (containerApps.<app>.user,
# default root; modules/scripts/stage-container-secrets.sh). An app a native
# service runs (image = null) has them loaded into the units that read them:
# nixInfra.appCredentialUnits.<app> (set by its app module, e.g.
# app_modules/postgresql.nix), else its own unit. No unit loads a credential
# it does not read, since a unit whose credential is missing fails to start.
{ config, lib, pkgs, ... }:
let
  cfg = config.nixInfra.apps;
  node = config.nixInfra.node;
  etcd = config.nixInfra.etcd;
  mesh = config.nixInfra.mesh;
  inherit (lib) escapeShellArgs filterAttrs mapAttrs' mapAttrsToList mkIf mkMerge mkOption nameValuePair types;
  inherit (import ./retry.nix { inherit lib; }) retried;

  serviceName = unit: lib.removeSuffix ".service" unit;
  credentialLines = names: map (n: "${n}:${node.credentialsDir}/${n}.cred") names;
  etcdCredentials = [ "nix-infra-etcd-ca" "nix-infra-etcd-client-cert" "nix-infra-etcd-client-key" ];

  registrationOptions = {
    options = {
      app = mkOption { type = types.str; description = "App name (the etcd key's <app>)."; };
      group = mkOption { type = types.enum [ "frontends" "backends" "services" ]; description = "Mesh group."; };
      node = mkOption { type = types.str; description = "This node's name (the etcd key's <node>)."; };
      address = mkOption { type = types.str; description = "Address consumers' proxies connect to (the node's private IP)."; };
      port = mkOption { type = types.port; description = "Port the app listens on."; };
      ttl = mkOption { type = types.ints.between 2 3600; description = "Lease TTL: how long a dead instance stays registered."; };
      interval = mkOption { type = types.ints.between 1 3600; description = "Seconds between health checks and lease renewals."; };
      timeout = mkOption {
        type = types.nullOr (types.ints.between 1 3600);
        default = null;
        description = "Seconds before a health check counts as failed (null: the interval).";
      };
      healthCmd = mkOption { type = types.str; description = "Shell command; exit 0 means healthy."; };
    };
  };

  appOptions = { name, ... }: {
    options = {
      image = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "OCI image; null when a native NixOS service (e.g. an app module) runs the app.";
      };
      port = mkOption { type = types.port; description = "Port the app listens on (on the node; host network)."; };
      unit = mkOption {
        type = types.str;
        default = "podman-${name}.service";
        description = "The unit that runs the app (a container's: podman-<name>.service); the registration is bound to it, a rotation of its secrets restarts it.";
      };
      secrets = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Secrets the app gets: in a container, /run/secrets/<name> (owned by the container's user); a native app's module loads them into the unit that reads them.";
      };
      environment = mkOption {
        type = types.attrsOf types.str;
        default = { };
        description = "Extra environment of the container, beside the consumer environment of the mesh.";
      };
      cmd = mkOption { type = types.listOf types.str; default = [ ]; description = "Arguments to the image's entrypoint."; };
      volumes = mkOption { type = types.listOf types.str; default = [ ]; description = "Extra `src:dst[:opts]` volumes of the container."; };
      actions = mkOption {
        type = types.attrsOf types.lines;
        default = { };
        example = { migrate = "podman exec app-api /app/migrate"; };
        description = "Scripts `nix-infra action NODE APP NAME` runs as root (/etc/nix-infra/actions/<app>/<name>).";
      };
      containerName = mkOption {
        type = types.str;
        default = "app-${name}";
        readOnly = true;
        description = ''
          The container's name (`podman exec app-<name> ...`): upstream names the
          container's runtime directory /run/<container name> after it, and the
          prefix keeps an app named e.g. postgresql or flannel out of another
          service's /run directory.
        '';
      };
      registration = mkOption {
        type = types.submodule registrationOptions;
        description = "Arguments of the registration unit (lib: nodeconfig.registration).";
      };
    };
  };

  # etcdctl reads its TLS files from these; the paths exist only inside the unit
  registerWrapper = name: app: pkgs.writeShellScript "nix-infra-register-${name}" ''
    export ETCDCTL_API=3
    export ETCDCTL_ENDPOINTS=${lib.escapeShellArg (lib.concatStringsSep "," etcd.endpoints)}
    export ETCDCTL_CACERT="$CREDENTIALS_DIRECTORY/nix-infra-etcd-ca"
    export ETCDCTL_CERT="$CREDENTIALS_DIRECTORY/nix-infra-etcd-client-cert"
    export ETCDCTL_KEY="$CREDENTIALS_DIRECTORY/nix-infra-etcd-client-key"
    exec ${pkgs.bash}/bin/bash ${./scripts/register-instance.sh} ${escapeShellArgs ([
      "--app" app.registration.app "--group" app.registration.group "--node" app.registration.node
      "--address" app.registration.address "--port" (toString app.registration.port)
      "--ttl" (toString app.registration.ttl) "--interval" (toString app.registration.interval)
    ] ++ lib.optionals (app.registration.timeout != null) [
      "--health-timeout" (toString app.registration.timeout)
    ] ++ [
      "--health-cmd" app.registration.healthCmd
    ])}
  '';

  containers = filterAttrs (_: a: a.image != null) cfg;

  # where a container's decrypted secrets are staged for it (tmpfs, removed when the unit stops)
  secretsDir = name: "/run/nix-infra-secrets/${name}";
  # the container's user (uid[:gid]) owns its secrets; app_modules/container.nix sets it
  secretsOwner = name: (config.nixInfra.containerApps.${name} or { }).user or null;
  stageSecrets = name: a: pkgs.writeShellScript "nix-infra-stage-secrets-${name}" ''
    exec ${pkgs.bash}/bin/bash ${./scripts/stage-container-secrets.sh} \
      "$CREDENTIALS_DIRECTORY" ${escapeShellArgs [ (secretsDir name) (toString (secretsOwner name)) ]} -- ${escapeShellArgs a.secrets}
  '';
in
{
  # standalone: the node, etcd and mesh options it reads
  imports = [ ./base.nix ./ctrl.nix ./mesh.nix ];

  options.nixInfra.apps = mkOption {
    type = types.attrsOf (types.submodule appOptions);
    default = { };
    description = "The apps placed on this node (from lib), by name.";
  };

  options.nixInfra.appCredentialUnits = mkOption {
    type = types.attrsOf (types.listOf (types.strMatching "[A-Za-z0-9:_.@-]+[.]service"));
    default = { };
    example = { db = [ "nix-infra-postgresql-password.service" ]; };
    description = ''
      For an app a native service runs (no image): the units that read its
      secrets, and so load them (LoadCredentialEncrypted=); by app name.
      Default: the app's own unit. An app module sets it for the app it
      configures (app_modules/postgresql.nix, valkey.nix): a unit that loads a
      credential it does not read would fail for nothing while it is missing.
    '';
  };

  options.nixInfra.appActions = mkOption {
    type = types.attrsOf (types.attrsOf types.lines);
    default = { };
    example = { api.migrate = "podman exec app-api /app/migrate"; };
    description = ''
      Action scripts by app and name, installed only on the nodes the app is
      placed on: for a module added to every node (setting
      nixInfra.apps.<app>.actions there would create the app on every node).
      Merged with nixInfra.apps.<app>.actions.
    '';
  };

  config = mkIf (cfg != { }) (mkMerge [
    {
      assertions = mapAttrsToList (name: a: {
        assertion = a.registration.interval < a.registration.ttl;
        message = "nixInfra.apps.${name}.registration: interval must be below ttl.";
      }) cfg;

      virtualisation.podman.enable = mkIf (containers != { }) true;
      virtualisation.oci-containers.backend = "podman";
      virtualisation.oci-containers.containers = lib.mapAttrs' (name: a: nameValuePair a.containerName {
        inherit (a) image cmd;
        # the unit lib names (manifest apps.<app>.unit) is the one oci-containers generates
        serviceName = serviceName a.unit;
        # host network: the app listens on the node's port, 127.0.0.1 reaches the mesh proxy
        extraOptions = [ "--network=host" ];
        environment = mesh.consumerEnv // a.environment;
        volumes = a.volumes ++ map (s: "${secretsDir name}/${s}:/run/secrets/${s}:ro") a.secrets;
      }) containers;

      environment.etc = lib.listToAttrs (lib.concatLists (mapAttrsToList (app: a:
        mapAttrsToList (action: script: nameValuePair "nix-infra/actions/${app}/${action}" {
          mode = "0700";
          text = "#!${pkgs.bash}/bin/bash\nset -euo pipefail\n${script}";
        }) (a.actions // config.nixInfra.appActions.${app} or { })
      ) cfg));
    }
    {
      systemd.services = lib.mkMerge [
        # a container's unit loads its secrets and stages them for the container's user;
        # until the orchestrator delivered them it fails and retries (no start limit),
        # so it comes up by itself once they are there
        (mapAttrs' (name: a: nameValuePair (serviceName a.unit) {
          startLimitIntervalSec = 0;
          serviceConfig = retried // lib.optionalAttrs (a.secrets != [ ]) {
            LoadCredentialEncrypted = credentialLines a.secrets;
            ExecStartPre = [ "${stageSecrets name a}" ];
            # a list: upstream's podman unit has its own RuntimeDirectory (/run/<name>)
            RuntimeDirectory = [ "nix-infra-secrets/${name}" ];
          };
        }) containers)
        # a native app's secrets: loaded by the units that read them (an app module
        # names them in nixInfra.appCredentialUnits; default: the app's own unit)
        (lib.mkMerge (mapAttrsToList (name: a:
          lib.listToAttrs (map (unit: nameValuePair (serviceName unit) {
            serviceConfig.LoadCredentialEncrypted = credentialLines a.secrets;
          }) (config.nixInfra.appCredentialUnits.${name} or [ a.unit ]))
        ) (filterAttrs (_: a: a.image == null && a.secrets != [ ]) cfg)))
        # one registration unit per app, living and dying with the app's unit
        (mapAttrs' (name: a: nameValuePair "nix-infra-register-${name}" {
          description = "nix-infra: register ${name} in the mesh while healthy";
          wantedBy = [ a.unit ];
          bindsTo = [ a.unit ];
          wants = [ "network-online.target" ];
          after = [ a.unit "network-online.target" ];
          path = [ pkgs.etcd pkgs.curl pkgs.gawk pkgs.coreutils pkgs.bash ];
          serviceConfig = {
            ExecStart = registerWrapper name a;
            LoadCredentialEncrypted = credentialLines etcdCredentials;
            Restart = "always";
            RestartSec = "5s";
            # SIGTERM lets the script delete its key and revoke its lease
            KillSignal = "SIGTERM";
          };
        }) cfg)
      ];
    }
  ]);
}
