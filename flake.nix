{
  description = "nix-infra: a private PaaS on Hetzner Cloud built on NixOS";

  inputs = {
    # Current stable NixOS release.
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    # Declarative partitioning, run by nixos-anywhere at install time.
    disko.url = "github:nix-community/disko";
    disko.inputs.nixpkgs.follows = "nixpkgs";
    # nixos-anywhere (kexec + disko install) is taken from the pinned nixpkgs
    # (pkgs.nixos-anywhere), so it is pinned by nixpkgs' lock entry.
  };

  outputs =
    { self, nixpkgs, disko }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      infraLib = import ./lib;

      nodeTypes = nixpkgs.lib.genAttrs infraLib.constants.nodeTypes (t: import (./node_types + "/${t}.nix"));

      /**
        Turn a cluster spec into a cluster flake's outputs.

        Takes { spec; modules ? { <node> = [ module ... ]; }; extraModules ? [ ];
        system ? "x86_64-linux"; }; returns { nixInfra = { manifest; cluster; };
        nixosConfigurations.<node>; }. Every node system gets its node type,
        the per-node data lib derived, and the node's own modules.
      */
      mkCluster =
        {
          spec,
          modules ? { },
          extraModules ? [ ],
          system ? "x86_64-linux",
        }:
        let
          cluster = infraLib.evalCluster spec;
        in
        {
          nixInfra = {
            inherit (cluster) manifest;
            inherit cluster;
          };
          nixosConfigurations = builtins.mapAttrs (
            name: data:
            nixpkgs.lib.nixosSystem {
              inherit system;
              specialArgs = { nixInfraNode = data; nixInfraCluster = cluster; };
              modules = [
                disko.nixosModules.disko
                nodeTypes.${data.type}
                {
                  nixInfra.node = {
                    inherit name;
                    inherit (data) privateIp firewall;
                    sshKeys = cluster.spec.provider.sshKeys;
                  };
                  nixInfra.hetzner.enable = cluster.spec.provider.type == "hetzner";
                  system.stateVersion = nixpkgs.lib.mkDefault "26.05";
                }
              ]
              ++ (modules.${name} or [ ])
              ++ extraModules;
            }
          ) cluster.nodes;
        };
    in
    {
      lib = infraLib // { inherit mkCluster; };

      nixosModules = {
        node = ./modules/node.nix;
        hetzner = ./modules/hetzner.nix;
        default = {
          imports = [ ./modules/node.nix ./modules/hetzner.nix ];
        };
      };

      inherit nodeTypes;

      # Reusable apps arrive with the apps capability (generic container app,
      # postgresql, valkey, ...); a cluster repo adds its own beside them.
      appModules = { };

      packages = forAllSystems (pkgs: rec {
        nix-infra = pkgs.python3Packages.callPackage ./orchestrator/package.nix { };
        default = nix-infra;
      });

      apps = forAllSystems (pkgs: {
        deploy = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/nix-infra";
          meta.description = "nix-infra orchestrator: plan, provision, deploy, destroy";
        };
        default = self.apps.${pkgs.stdenv.hostPlatform.system}.deploy;
      });

      checks = forAllSystems (pkgs: import ./checks { inherit pkgs self infraLib; });

      templates.default = {
        path = ./templates/cluster;
        description = "A nix-infra cluster repo: flake.nix, cluster.nix, app_modules/, secrets/, facts/";
      };

      formatter = forAllSystems (pkgs: pkgs.nixfmt);

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.python3.withPackages (
              ps: with ps; [ hcloud click rich pytest hypothesis jsonschema cryptography fabric ]
            ))
            pkgs.ruff
            pkgs.mypy
            pkgs.etcd
            pkgs.haproxy
            pkgs.openssh
            pkgs.nixos-anywhere
            pkgs.nixfmt
          ];
        };
      });
    };
}
