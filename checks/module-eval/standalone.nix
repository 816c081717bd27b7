# Each module the flake exports (nixosModules.<x>, appModules.<x>), imported
# alone into a bare NixOS configuration, as its documented example does
# (./examples/<x>.nix, shown in docs/modules.md): it must import what it
# needs. The bare configuration is what any host has: a boot loader target and
# a state version. The examples get the flake as the special argument
# `nix-infra`, as a downstream flake passes it (specialArgs).
{ nixosSystem }:
let
  # the flake's exports (flake.nix: nixosModules, appModules, lib); tests/test_module_eval.py
  # checks that the names agree
  nix-infra = {
    nixosModules = {
      base = ../../modules/base.nix;
      hetzner = ../../modules/hetzner.nix; # disko's module is among the stand-ins
      ctrl = ../../modules/ctrl.nix;
      mesh = ../../modules/mesh.nix;
      overlay = ../../modules/overlay.nix;
      apps = ../../modules/apps.nix;
      ingress = ../../modules/ingress.nix;
      registry = ../../modules/registry.nix;
      default = ../../modules;
    };
    appModules = {
      container = ../../app_modules/container.nix;
      postgresql = ../../app_modules/postgresql.nix;
      valkey = ../../app_modules/valkey.nix;
    };
    lib = import ../../lib;
  };
  bare = {
    system.stateVersion = "26.05";
    boot.loader.grub.devices = [ "/dev/vda" ];
  };
  names = builtins.attrNames nix-infra.nixosModules ++ builtins.attrNames nix-infra.appModules;
in
builtins.listToAttrs (
  map (name: {
    inherit name;
    value = nixosSystem {
      modules = [ (./examples + "/${name}.nix") bare ];
      specialArgs = { inherit nix-infra; };
    };
  }) names
)
