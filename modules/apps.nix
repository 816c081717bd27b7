# Apps on a node: for every app placed here (lib: nodes.<n>.config.apps), its
# container (virtualisation.oci-containers, podman, host network so that
# 127.0.0.1 reaches the mesh) unless a native service runs it, its secrets as
# systemd credentials (LoadCredentialEncrypted=, from the files the
# orchestrator delivers), the consumer environment (<PREFIX>_HOST/PORT/...),
# its action scripts, and a registration unit bound to the app's unit that
# announces the instance in etcd while its health check passes
# (modules/scripts/register-instance.sh, the script the tests run).
{ config, lib, pkgs, ... }:
let
  cfg = config.nixInfra.apps;
  node = config.nixInfra.node;
  etcd = config.nixInfra.etcd;
  mesh = config.nixInfra.mesh;
  inherit (lib) escapeShellArgs filterAttrs mapAttrs' mapAttrsToList mkIf mkMerge mkOption nameValuePair types;

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
        description = "The unit that runs the app: it loads the credentials; the registration is bound to it.";
      };
      secrets = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Secrets the app gets as credentials: $CREDENTIALS_DIRECTORY/<name>, in a container /run/secrets/<name>.";
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
        example = { migrate = "podman exec api /app/migrate"; };
        description = "Scripts `nix-infra action NODE APP NAME` runs as root (/etc/nix-infra/actions/<app>/<name>).";
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
    exec ${pkgs.bash}/bin/bash ${./scripts/register-instance.sh} ${escapeShellArgs [
      "--app" app.registration.app "--group" app.registration.group "--node" app.registration.node
      "--address" app.registration.address "--port" (toString app.registration.port)
      "--ttl" (toString app.registration.ttl) "--interval" (toString app.registration.interval)
      "--health-cmd" app.registration.healthCmd
    ]}
  '';

  containers = filterAttrs (_: a: a.image != null) cfg;
in
{
  options.nixInfra.apps = mkOption {
    type = types.attrsOf (types.submodule appOptions);
    default = { };
    description = "The apps placed on this node (from lib), by name.";
  };

  config = mkIf (cfg != { }) (mkMerge [
    {
      assertions = mapAttrsToList (name: a: {
        assertion = a.registration.interval < a.registration.ttl;
        message = "nixInfra.apps.${name}.registration: interval must be below ttl.";
      }) cfg;

      virtualisation.podman.enable = mkIf (containers != { }) true;
      virtualisation.oci-containers.backend = "podman";
      virtualisation.oci-containers.containers = lib.mapAttrs (name: a: {
        inherit (a) image cmd;
        # host network: the app listens on the node's port, 127.0.0.1 reaches the mesh proxy
        extraOptions = [ "--network=host" ];
        environment = mesh.consumerEnv // a.environment;
        volumes = a.volumes ++ map (s: "/run/credentials/${a.unit}/${s}:/run/secrets/${s}:ro") a.secrets;
      }) containers;

      environment.etc = lib.listToAttrs (lib.concatLists (mapAttrsToList (app: a:
        mapAttrsToList (action: script: nameValuePair "nix-infra/actions/${app}/${action}" {
          mode = "0700";
          text = "#!${pkgs.bash}/bin/bash\nset -euo pipefail\n${script}";
        }) a.actions
      ) cfg));
    }
    {
      systemd.services = lib.mkMerge [
        # the app's unit loads its secrets
        (mapAttrs' (name: a: nameValuePair (serviceName a.unit) {
          serviceConfig.LoadCredentialEncrypted = credentialLines a.secrets;
        }) (filterAttrs (_: a: a.secrets != [ ]) cfg))
        # one registration unit per app, living and dying with the app's unit
        (mapAttrs' (name: a: nameValuePair "nix-infra-register-${name}" {
          description = "nix-infra: register ${name} in the mesh while healthy";
          wantedBy = [ a.unit ];
          bindsTo = [ a.unit ];
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
