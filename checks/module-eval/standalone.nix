# Each module the flake exports (nixosModules.<x>, appModules.<x>), imported
# alone into a bare NixOS configuration with its options set as in its
# documented example: it must import what it needs (issue 18). The bare
# configuration is what any host has: a boot loader target and a state version.
{ lib }:
let
  confd = import ../../lib/confd.nix;
  bare = {
    system.stateVersion = "26.05";
    boot.loader.grub.devices = [ "/dev/vda" ];
  };
  node = {
    nixInfra.node = {
      enable = true;
      name = "web1";
      privateIp = "10.0.1.5";
      privateNetwork = "10.0.0.0/16";
      sshKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2 ops" ];
      adminCidrs = [ "198.51.100.0/24" ];
      firewall.private = { tcp = [ 8080 ]; udp = [ 51820 ]; };
    };
  };
  etcd = {
    nixInfra.etcd.endpoints = [ "https://10.0.0.2:2379" ];
    nixInfra.node.type = lib.mkDefault "worker";
  };
  registration = {
    app = "api"; group = "backends"; node = "web1"; address = "10.0.1.5"; port = 8080;
    ttl = 30; interval = 10; healthCmd = "curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8080/";
  };
  api = { image = "ghcr.io/acme/api:1.4"; port = 8080; secrets = [ "api-token" ]; inherit registration; };
  native = app: unit: port: {
    nixInfra.apps.${app} = {
      port = port;
      inherit unit;
      secrets = [ "${app}-password" ];
      registration = registration // { inherit app port; group = "services"; };
    };
  };
in
builtins.mapAttrs (_: modules: modules ++ [ bare ]) {
  base = [ ../../modules/base.nix node { nixInfra.node.type = "worker"; } ];
  hetzner = [
    ../../modules/hetzner.nix
    { nixInfra.hetzner = { enable = true; ipv6Network = "2a01:4f8:c17:b8f8::/64"; }; }
  ];
  ctrl = [
    ../../modules/ctrl.nix
    node
    etcd
    {
      nixInfra.node.type = "ctrl";
      nixInfra.etcd = { members = [ "web1" ]; initialCluster = "web1=https://10.0.1.5:2380"; server.enable = true; };
    }
  ];
  mesh = [
    ../../modules/mesh.nix
    node
    etcd
    { nixInfra.mesh = { enable = true; template = confd.haproxyTemplate "web1"; emptyConfig = confd.header; }; }
  ];
  overlay = [ ../../modules/overlay.nix node etcd { nixInfra.overlay.enable = true; } ];
  apps = [ ../../modules/apps.nix node etcd { nixInfra.apps.api = api; } ];
  ingress = [
    ../../modules/ingress.nix
    {
      nixInfra.ingress = {
        enable = true;
        frontends.web = 5100;
        acmeEmail = "ops@example.com";
        virtualHosts."www.example.com".app = "web";
      };
    }
  ];
  registry = [ ../../modules/registry.nix node { nixInfra.node.type = "registry"; nixInfra.registry.enable = true; } ];
  default = [ ../../modules node etcd ];
  container = [
    ../../app_modules/container.nix
    node
    etcd
    { nixInfra.apps.api = api; nixInfra.containerApps.api = { dataDir = "/var/lib/api"; user = "1000:1000"; }; }
  ];
  postgresql = [
    ../../app_modules/postgresql.nix
    node
    etcd
    (native "db" "postgresql.service" 5432)
    { nixInfra.postgresql = { app = "db"; passwordSecret = "db-password"; }; }
  ];
  valkey = [
    ../../app_modules/valkey.nix
    node
    etcd
    (native "cache" "redis-cache.service" 6379)
    { nixInfra.valkey = { app = "cache"; passwordSecret = "cache-password"; }; }
  ];
}

