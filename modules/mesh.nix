# The service mesh on a node: confd watches /cluster in etcd (etcdv3 backend,
# TLS with the node's client certificate) and renders the mesh haproxy config
# from lib's template; haproxy runs from its own unit on a config file NixOS
# does not own (so a switch never fights confd), starts with a valid empty
# config before confd's first render, and reloads gracefully (master-worker,
# SIGUSR2) after confd's check_cmd (`haproxy -c`) passed. Consumers reach each
# app of the groups the node consumes at 127.0.0.1:<publish port>.
{ config, lib, pkgs, ... }:
let
  cfg = config.nixInfra.mesh;
  node = config.nixInfra.node;
  etcd = config.nixInfra.etcd;
  confdLib = import ../lib/confd.nix;
  inherit (lib) mkEnableOption mkIf mkOption mkPackageOption types;
  haproxyExe = "${cfg.haproxyPackage}/bin/haproxy";
  emptyConfig = pkgs.writeText "nix-infra-mesh-empty.cfg" cfg.emptyConfig;
  confdDir = "nix-infra/confd";
  # confd's template resource: it carries haproxy's and systemctl's store paths
  resource = confdLib.resourceToml {
    src = "mesh-haproxy.cfg.tmpl";
    dest = cfg.configPath;
    checkCmd = "${haproxyExe} -c -f {{.src}}";
    reloadCmd = "${config.systemd.package}/bin/systemctl reload -- nix-infra-mesh-haproxy.service";
  };
in
{
  # standalone: the node and etcd options it reads
  imports = [ ./base.nix ./ctrl.nix ];

  options.nixInfra.mesh = {
    enable = mkEnableOption "the mesh proxy (confd + haproxy) for the groups this node consumes";

    template = mkOption {
      type = types.lines;
      description = "confd template of the mesh haproxy config (from lib: confd.haproxyTemplate <node>).";
    };

    emptyConfig = mkOption {
      type = types.lines;
      description = "The config haproxy starts with before confd's first render (lib: confd.header).";
    };

    configPath = mkOption {
      type = types.str;
      default = "/var/lib/nix-infra/mesh/haproxy.cfg";
      description = "The live mesh config confd writes; deliberately not under /etc, which NixOS owns.";
    };

    consumerEnv = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { API_HOST = "127.0.0.1"; API_PORT = "5001"; API_PROTOCOL = "http"; API_PATH = "/"; };
      description = "<PREFIX>_HOST/PORT/PROTOCOL/PATH of every consumed app; the apps module passes them to the node's apps.";
    };

    haproxyPackage = mkPackageOption pkgs "haproxy" { };
    confdPackage = mkPackageOption pkgs "confd" { };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = etcd.endpoints != [ ];
        message = "nixInfra.mesh needs nixInfra.etcd.endpoints (the cluster has no ctrl node?).";
      }
    ];

    environment.etc."${confdDir}/templates/mesh-haproxy.cfg.tmpl".text = cfg.template;
    environment.etc."${confdDir}/conf.d/mesh-haproxy.toml".text = resource;

    systemd.tmpfiles.rules = [ "d ${dirOf cfg.configPath} 0755 root root -" ];

    systemd.services.nix-infra-mesh-haproxy = {
      description = "nix-infra mesh proxy (haproxy on 127.0.0.1, config rendered by confd)";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      serviceConfig = {
        Type = "notify";
        # a valid empty config until confd's first render
        ExecStartPre = [
          "${pkgs.bash}/bin/bash -c '[ -s ${cfg.configPath} ] || ${pkgs.coreutils}/bin/install -D -m 0644 ${emptyConfig} ${cfg.configPath}'"
          "${haproxyExe} -c -q -f ${cfg.configPath}"
        ];
        ExecStart = "${haproxyExe} -Ws -f ${cfg.configPath} -p /run/nix-infra-mesh/haproxy.pid";
        # graceful: the master re-executes and hands the listeners to new workers
        ExecReload = [
          "${haproxyExe} -c -q -f ${cfg.configPath}"
          "${pkgs.coreutils}/bin/kill -USR2 $MAINPID"
        ];
        KillMode = "mixed";
        Restart = "always";
        RuntimeDirectory = "nix-infra-mesh";
      };
    };

    systemd.services.nix-infra-confd = {
      description = "nix-infra confd: renders the mesh proxy config from etcd /cluster";
      wantedBy = [ "multi-user.target" ];
      wants = [ "nix-infra-mesh-haproxy.service" "network-online.target" ];
      after = [ "nix-infra-mesh-haproxy.service" "network-online.target" ];
      # confd reads its template resources once, at start: a changed template or
      # resource (e.g. a new haproxy or systemd store path in it) needs a restart
      restartTriggers = [ cfg.template resource ];
      serviceConfig = {
        # %d is systemd's credentials directory of this unit
        ExecStart = lib.concatStringsSep " " (
          [
            "${cfg.confdPackage}/bin/confd"
            "-backend etcdv3"
            "-confdir /etc/${confdDir}"
            "-watch"
            "-client-ca-keys %d/nix-infra-etcd-ca"
            "-client-cert %d/nix-infra-etcd-client-cert"
            "-client-key %d/nix-infra-etcd-client-key"
          ]
          ++ map (e: "-node ${e}") etcd.endpoints
        );
        LoadCredentialEncrypted = map (n: "${n}:${node.credentialsDir}/${n}.cred") [
          "nix-infra-etcd-ca"
          "nix-infra-etcd-client-cert"
          "nix-infra-etcd-client-key"
        ];
        Restart = "always";
        RestartSec = "5s";
      };
    };
  };
}
