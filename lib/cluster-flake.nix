# mkClusterFlake: a cluster spec -> a cluster flake's outputs. Pure apart from
# the `nixpkgs.lib.nixosSystem` it is given, so the tests can hand it a stand-in
# and check what every node's modules receive (lib/tests/cluster-flake.nix).
{
  nixpkgs,
  # extra modules every node gets from nix-infra's flake (disko's NixOS module)
  baseModules ? [ ],
  nodeTypes ? builtins.listToAttrs (
    map (t: { name = t; value = ../node_types + "/${t}.nix"; }) (import ./constants.nix).nodeTypes
  ),
}:
let
  infraLib = import ./.;

  /**
    The facts of a node (facts/<node>.json, written by the orchestrator), or {}.

    Example: readFacts ./facts "worker001" => { publicIpv6 = "2a01:4f8:c17:b8f8::/64"; ... }
  */
  readFacts =
    facts: name:
    let
      file = facts + "/${name}.json";
    in
    if facts != null && builtins.pathExists file then builtins.fromJSON (builtins.readFile file) else { };

  /**
    The module that hands a node its data: lib's nodes.<name>.config as
    nixInfra.* option values (no text substitution), plus its facts.
  */
  nodeDataModule =
    spec: name: node: facts:
    let
      c = node.config;
      ipv6 = (readFacts facts name).publicIpv6 or null;
      # each volume's Hetzner id, recorded by provision (null until then)
      volumeIds = (readFacts facts name).volumes or { };
    in
    {
      nixInfra = {
        node = { inherit (c.node) name privateIp privateNetwork firewall sshKeys adminCidrs; };
        etcd = { inherit (c.etcd) endpoints members initialCluster clientPort peerPort; };
        mesh = { inherit (c.mesh) enable template emptyConfig configPath consumerEnv; };
        overlay = { inherit (c.overlay) network port; };
        apps = builtins.mapAttrs (an: a: {
          inherit (a) image port secrets unit registration;
        } // (if (spec.apps.${an}.volume or null) != null then { volume = spec.apps.${an}.volume; } else { })) c.apps;
        volumes = builtins.mapAttrs (v: vol: {
          inherit (vol) size mountpoint filesystem;
          id = volumeIds.${v}.id or null;
        }) (c.volumes or { });
        ingress.frontends = c.ingress.frontends;
        hetzner = {
          enable = spec.provider.type == "hetzner";
          ipv6Network = ipv6;
        };
      };
    };

  # `nix flake check` of a cluster repo; it needs nixpkgs' packages, so it lives outside lib/
  clusterChecks =
    system: nixosConfigurations: manifest:
    import ../checks/cluster-flake-checks.nix {
      pkgs = nixpkgs.legacyPackages.${system};
      inherit nixosConfigurations manifest;
    };
in
{
  /**
    Turn a cluster spec into a cluster flake's outputs.

    Takes { cluster (the spec, or a path to it); modules ? [ ] (for every
    node); nodeModules ? { <node> = [ ... ]; }; facts ? null (the facts/
    directory, for IPv6 addresses); system ? "x86_64-linux"; stateVersion ?
    "26.05"; } and returns { nixInfra = { manifest; cluster; };
    nixosConfigurations.<node>; checks.<system> (clusterChecks) }. Each node system is its node type's
    modules, its lib-derived data as nixInfra.* options, then `modules` and
    its own `nodeModules`.

    Example:
      outputs = { nix-infra, ... }: nix-infra.lib.mkClusterFlake {
        cluster = ./cluster.nix;
        nodeModules.worker001 = [ ./app_modules/api.nix ];
        facts = ./facts;
      };
  */
  mkClusterFlake =
    {
      cluster,
      modules ? [ ],
      nodeModules ? { },
      facts ? null,
      system ? "x86_64-linux",
      stateVersion ? "26.05",
    }:
    let
      spec = if builtins.isPath cluster || builtins.isString cluster then import cluster else cluster;
      evaluated = infraLib.evalCluster spec;
      unknown = builtins.filter (n: !(evaluated.nodes ? ${n})) (builtins.attrNames nodeModules);
    in
    if unknown != [ ] then
      throw "mkClusterFlake: nodeModules names nodes that are not in the cluster: ${builtins.concatStringsSep ", " unknown}"
    else
      rec {
        nixInfra = {
          inherit (evaluated) manifest;
          cluster = evaluated;
        };
        # `nix flake check` of the cluster repo (its CI, templates/cluster/.github)
        checks.${system} = clusterChecks system nixosConfigurations evaluated.manifest;
        nixosConfigurations = builtins.mapAttrs (
          name: node:
          nixpkgs.lib.nixosSystem {
            inherit system;
            modules =
              baseModules
              ++ [
                nodeTypes.${node.type}
                (nodeDataModule evaluated.spec name node facts)
                { system.stateVersion = nixpkgs.lib.mkDefault stateVersion; }
              ]
              ++ modules
              ++ (nodeModules.${name} or [ ]);
          }
        ) evaluated.nodes;
      };

  inherit readFacts nodeDataModule clusterChecks;
}
