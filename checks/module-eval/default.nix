# The module evaluation check: every node of every example cluster through the
# real nixpkgs module system (lib.evalModules of the nixpkgs lib given), with
# typed stand-ins of the upstream options our modules use (./upstream.nix) and
# of the packages (./pkgs.nix). It drives the public entry points: the
# template's and examples/full's flake.nix outputs with a stand-in nix-infra
# input whose lib.mkClusterFlake is lib/cluster-flake.nix over a stand-in
# nixosSystem. Nothing is built.
#
#   nix-instantiate --eval --strict --json -A summary checks/module-eval \
#     --arg nixpkgsLib /path/to/nixpkgs/lib
#
# (checks/module-eval/run does that, node by node, and prints the figures.)
{
  # a nixpkgs `lib` directory (nix-community/nixpkgs.lib's lib/, or <nixpkgs>/lib)
  nixpkgsLib ? builtins.getEnv "NIXPKGS_LIB",
}:
let
  lib =
    if nixpkgsLib == "" then
      throw "checks/module-eval: set NIXPKGS_LIB (or --arg nixpkgsLib) to a nixpkgs lib directory"
    else
      import nixpkgsLib;
  pkgs = import ./pkgs.nix;
  upstream = import ./upstream.nix { inherit lib pkgs; };

  standIns = map (e: {
    _file = "stand-in of ${e.file}";
    options = e.options or { };
    imports = lib.optional (e ? module) e.module ++ lib.optional (e ? config) e.config;
  }) upstream;

  nixosSystem =
    { modules, system ? "x86_64-linux", specialArgs ? { }, ... }:
    lib.evalModules {
      specialArgs = specialArgs // { modulesPath = ./modules-path; };
      modules = standIns ++ [ { _module.args.pkgs = pkgs; } ] ++ modules;
    };

  clusterFlake = import ../../lib/cluster-flake.nix {
    # disko's module is among the stand-ins
    nixpkgs.lib = lib // { inherit nixosSystem; };
    nixpkgs.legacyPackages.x86_64-linux = pkgs;
  };

  standalone = import ./standalone.nix { inherit nixosSystem; };

  # the flake's appModules (flake.nix), by the same paths
  appModules = {
    container = ../../app_modules/container.nix;
    postgresql = ../../app_modules/postgresql.nix;
    valkey = ../../app_modules/valkey.nix;
  };
  nixInfraInput = {
    lib = { inherit (clusterFlake) mkClusterFlake; };
    apps = { };
    inherit appModules;
  };

  # checks/: the VM tests' cluster, with what the VM tests add to its nodes
  vmTestCluster = clusterFlake.mkClusterFlake {
    cluster = ../cluster.nix;
    modules = [
      ../service-apps.nix
      # what the test driver's qemu-vm.nix gives every VM: it boots the VM itself
      { boot.loader.grub.devices = [ "nodev" ]; }
    ];
    nodeModules = lib.genAttrs [ "worker001" "worker002" ] (_: [
      { systemd.services.demo-app = { wantedBy = [ "multi-user.target" ]; script = "exec python3 -m http.server 8080"; }; }
    ]);
  };

  clusters = {
    template = (import ../../templates/cluster/flake.nix).outputs { nix-infra = nixInfraInput; };
    example = clusterFlake.mkClusterFlake { cluster = ../../lib/example.nix; };
    full = (import ../../examples/full/flake.nix).outputs { nix-infra = nixInfraInput; };
    checks = vmTestCluster;
    every-type = import ./every-type.nix { inherit (clusterFlake) mkClusterFlake; inherit appModules; };
    # each exported module alone in a bare configuration (no manifest: nothing to cross-check)
    standalone = {
      nixosConfigurations = standalone;
      nixInfra.manifest = { nodes = lib.mapAttrs (_: _: { credentialUnits = { }; apps = [ ]; }) standalone; apps = { }; };
    };
  };

  # force the value of every defined option (submodule values in full)
  forceAll =
    options:
    lib.foldl' (acc: o: builtins.seq acc (if o.isDefined then builtins.deepSeq o.value true else true)) true (
      lib.collect lib.isOption (removeAttrs options [ "_module" ])
    );

  /**
    The result of one node: { warnings; failedAssertions; errors; } after
    forcing every definition. `errors` are our own rules on the evaluated
    system: every unit we write into exists (has ExecStart or a script), and
    every credential unit of the manifest is a unit of the system, and every
    credential the node is given is loaded by some unit.
  */
  nodeResult =
    flake: name:
    let
      sys = flake.nixosConfigurations.${name};
      cfg = sys.config;
      services = cfg.systemd.services;
      fragments = lib.attrNames (
        lib.filterAttrs (_: s: s.script == "" && !(s.serviceConfig ? ExecStart)) services
      );
      manifestNode = flake.nixInfra.manifest.nodes.${name};
      credentialUnits = lib.unique (lib.concatLists (lib.attrValues manifestNode.credentialUnits));
      loaded = lib.concatMap (s: map (l: lib.head (lib.splitString ":" l)) (lib.toList (s.serviceConfig.LoadCredentialEncrypted or [ ]))) (
        lib.attrValues services
      );
      unloaded = lib.filter (c: !(lib.elem c loaded)) (manifestNode.credentials or [ ]);
      missingUnits = lib.filter (u: !(services ? ${lib.removeSuffix ".service" u})) (
        credentialUnits ++ map (a: flake.nixInfra.manifest.apps.${a}.unit) manifestNode.apps
      );
    failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  in
    # as NixOS's toplevel: failed assertions first (a removed option throws when forced)
    if failedAssertions != [ ] then
      { inherit failedAssertions; warnings = cfg.warnings; errors = [ ]; }
    else
    builtins.seq (forceAll sys.options) {
      warnings = cfg.warnings;
      failedAssertions = [ ];
      errors =
        map (u: "systemd.services.${u}: only a fragment (no ExecStart, no script): no module defines this unit") fragments
        ++ map (u: "${u}: named by the manifest (app unit or credential unit) but not a unit of this system") missingUnits
        ++ map (c: "credential ${c}: delivered to this node (manifest credentials) but no unit loads it") unloaded;
    };
in
{
  inherit clusters lib nixosSystem upstream standalone;

  # cluster -> node names
  nodes = lib.mapAttrs (_: f: lib.attrNames f.nixosConfigurations) clusters;

  # one node's result, e.g. `node "full" "svc001"`
  node = cluster: name: nodeResult clusters.${cluster} name;

  # every node's result, cluster -> node -> result (one evaluation; an error
  # that is not catchable stops it: `run` evaluates node by node)
  summary = lib.mapAttrs (_: f: lib.genAttrs (lib.attrNames f.nixosConfigurations) (nodeResult f)) clusters;

  # per exported module: the nixInfra.* options it declares (name, type, default,
  # description, example), from the declarations themselves (docs/modules.md)
  optionDocs = lib.mapAttrs (
    name: sys:
    let
      own = o: lib.any (d: lib.hasSuffix "/${name}.nix" (toString d)) o.declarations;
    in
    map (o: {
      inherit (o) name type description;
      default = o.default.text or null;
      example = o.example.text or null;
    }) (lib.filter (o: lib.hasPrefix "nixInfra." o.name && own o && !(o.internal or false)) (lib.optionAttrSetToDocList sys.options))
  ) standalone;

  # every upstream option path the stand-ins declare, with its nixpkgs file
  declared = lib.concatMap (
    e:
    let
      opts = (lib.evalModules { modules = [ { options = e.options or { }; } { _module.check = false; } ]; }).options;
    in
    map (o: { option = lib.showOption o.loc; inherit (e) file; }) (lib.collect lib.isOption (removeAttrs opts [ "_module" ]))
  ) upstream;
}
