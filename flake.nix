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

      nodeTypes = nixpkgs.lib.genAttrs infraLib.constants.nodeTypes (t: ./node_types + "/${t}.nix");

      clusterFlake = import ./lib/cluster-flake.nix {
        inherit nixpkgs nodeTypes;
        baseModules = [ disko.nixosModules.disko ];
      };
    in
    {
      # lib.mkClusterFlake { cluster; modules; nodeModules; facts; } -> a cluster flake's
      # nixInfra.manifest and nixosConfigurations (lib/cluster-flake.nix)
      lib = infraLib // { inherit (clusterFlake) mkClusterFlake; };

      # Each module imports what it reads, so any one can be added alone to a NixOS
      # configuration (checks/module-eval/standalone.nix evaluates each that way).
      nixosModules = {
        base = ./modules/base.nix;
        # with disko's module, which it configures (imported once, whoever else imports it)
        hetzner = { imports = [ ./modules/hetzner.nix disko.nixosModules.disko ]; };
        ctrl = ./modules/ctrl.nix;
        mesh = ./modules/mesh.nix;
        overlay = ./modules/overlay.nix;
        apps = ./modules/apps.nix;
        ingress = ./modules/ingress.nix;
        registry = ./modules/registry.nix;
        default = { imports = [ ./modules disko.nixosModules.disko ]; };
      };

      inherit nodeTypes;

      # Reusable apps (app_modules/README.md); a cluster repo adds its own beside them.
      appModules = {
        container = ./app_modules/container.nix;
        postgresql = ./app_modules/postgresql.nix;
        valkey = ./app_modules/valkey.nix;
      };

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

      checks = forAllSystems (pkgs: import ./checks { inherit pkgs self infraLib disko; });

      templates.default = {
        path = ./templates/cluster;
        description = "A nix-infra cluster repo: flake.nix, cluster.nix, app_modules/, secrets/, facts/";
      };

      formatter = forAllSystems (pkgs: pkgs.nixfmt);

      # What the code and its tests use, and nothing else (tests/test_packaging.py checks it):
      # Python with the orchestrator's runtime and dev dependencies (pyproject.toml; mypy
      # inside that Python, so it sees them), and the tools the tests run.
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.python3.withPackages (
              ps:
              let
                inherit (import ./orchestrator/nix/python-packages.nix { inherit (ps) callPackage; })
                  cslab-etcd3
                  pyrage
                  ;
              in
              with ps;
              [
                # [project.dependencies]
                bcrypt
                click
                cryptography
                cslab-etcd3
                fabric
                grpcio
                hcloud
                protobuf
                pyrage
                requests
                rich
                urllib3
                # [project.optional-dependencies] dev (ruff is a tool below)
                pytest
                hypothesis
                jsonschema
                mypy
                types-paramiko
              ]
            ))
            pkgs.ruff
            pkgs.nix # nix-instantiate: lib/ tests, the parse and path checks of every .nix file
            pkgs.git # the path check lists the tracked .nix files
            pkgs.etcd # etcd and etcdctl: the control-plane tests, the registration script
            pkgs.haproxy # haproxy -c on the rendered mesh configuration
            pkgs.go # bin/setup builds confd and flanneld into .tools/bin
            pkgs.openssh # ssh and sshd: the deploy tests' fake nodes
            pkgs.util-linux # unshare: the fake nodes' mount namespaces
            pkgs.age # the store's files decrypt with the age tool
            pkgs.nixos-anywhere # installs the servers (provision)
          ];
        };
      });
    };
}
