# mkClusterFlake with a stand-in nixpkgs whose nixosSystem returns its
# arguments: what each node's modules are given must be lib's data.
let
  stubNixpkgs = {
    lib = {
      nixosSystem = args: args;
      mkDefault = v: { _default = v; };
    };
  };
  cf = import ../cluster-flake.nix { nixpkgs = stubNixpkgs; baseModules = [ "disko" ]; };
  lib = import ../.;
  flake = cf.mkClusterFlake {
    cluster = ../example.nix;
    facts = ./facts;
    nodeModules.worker001 = [ "api-module" ];
    modules = [ "everywhere" ];
  };
  cluster = lib.evalCluster (import ../example.nix);
  # the downstream flakes themselves, given a stand-in nix-infra input
  nixInfraInput = {
    lib = { inherit (cf) mkClusterFlake; };
    apps = { };
    appModules = { postgresql = "pg-module"; valkey = "valkey-module"; container = "container-module"; };
  };
  template = (import ../../templates/cluster/flake.nix).outputs { nix-infra = nixInfraInput; };
  full = (import ../../examples/full/flake.nix).outputs { nix-infra = nixInfraInput; };
  w = flake.nixosConfigurations.worker001;
  data = builtins.elemAt w.modules 2;
in
{
  testManifestIsLibs = { expr = flake.nixInfra.manifest; expected = cluster.manifest; };
  testEveryNodeHasASystem = { expr = builtins.attrNames flake.nixosConfigurations; expected = [ "ctrl001" "worker001" ]; };
  testModuleOrder = {
    expr = [ (builtins.elemAt w.modules 0) (builtins.elemAt w.modules 1) (builtins.elemAt w.modules 4) (builtins.elemAt w.modules 5) ];
    expected = [ "disko" ../../node_types/worker.nix "everywhere" "api-module" ];
  };
  testCtrlGetsNoNodeModules = { expr = builtins.length flake.nixosConfigurations.ctrl001.modules; expected = 5; };
  testNodeData = {
    expr = data.nixInfra.node;
    expected = { inherit (cluster.nodes.worker001.config.node) name privateIp privateNetwork firewall sshKeys adminCidrs; };
  };
  testEtcdDataMatchesManifest = { expr = data.nixInfra.etcd; expected = cluster.manifest.etcd; };
  testMeshData = {
    expr = data.nixInfra.mesh.template == lib.confd.haproxyTemplate "worker001" && data.nixInfra.mesh.enable;
    expected = true;
  };
  testAppsData = {
    expr = data.nixInfra.apps.api.registration // { inherit (data.nixInfra.apps.api) unit secrets; };
    expected = cluster.nodes.worker001.config.apps.api.registration // {
      unit = "podman-api.service";
      secrets = cluster.manifest.nodes.worker001.credentials;
    };
  };
  testIpv6FromFacts = { expr = data.nixInfra.hetzner.ipv6Network; expected = "2a01:4f8:c17:b8f8::/64"; };
  testNoFactsNoIpv6 = {
    expr = (builtins.elemAt flake.nixosConfigurations.ctrl001.modules 2).nixInfra.hetzner.ipv6Network;
    expected = null;
  };
  # volumes: lib's data with each volume's id from the facts; an app's volume from the spec
  testVolumesFromNodeconfigAndFacts =
    let
      node = cluster.nodes.worker001 // {
        config = cluster.nodes.worker001.config // {
          volumes = { data = { size = 20; mountpoint = "/srv/data"; filesystem = "ext4"; }; spare = { size = 10; mountpoint = "/srv/spare"; filesystem = "xfs"; }; };
        };
      };
      spec = { provider.type = "hetzner"; apps.api.volume = "data"; };
      d = (cf.nodeDataModule spec "volumes001" node ./facts).nixInfra;
    in
    {
      expr = { inherit (d) volumes; apiVolume = d.apps.api.volume; };
      expected = {
        volumes = {
          data = { size = 20; mountpoint = "/srv/data"; filesystem = "ext4"; id = 4711; };
          spare = { size = 10; mountpoint = "/srv/spare"; filesystem = "xfs"; id = null; };
        };
        apiVolume = "data";
      };
    };
  testNoVolumeNoAppVolume = { expr = data.nixInfra.volumes == { } && !(data.nixInfra.apps.api ? volume); expected = true; };
  testStateVersion = { expr = (builtins.elemAt w.modules 3).system.stateVersion; expected = { _default = "26.05"; }; };
  testTemplateFlakeManifestIsLibs = {
    expr = template.nixInfra.manifest;
    expected = (lib.evalCluster (import ../../templates/cluster/cluster.nix)).manifest;
  };
  testTemplateFlakeNodesGetLibsData = {
    expr = builtins.mapAttrs (name: sys: (builtins.elemAt sys.modules 2).nixInfra.node.privateIp) template.nixosConfigurations;
    expected = builtins.mapAttrs (_: n: n.privateIp) template.nixInfra.manifest.nodes;
  };
  testFullExampleEveryNodeType = {
    expr = builtins.sort builtins.lessThan (map (n: n.type) (builtins.attrValues full.nixInfra.manifest.nodes));
    expected = [ "ctrl" "ctrl" "ctrl" "ingress" "registry" "service" "worker" "worker" ];
  };
  testFullExampleAppModulesOnEveryNode = {
    expr = builtins.all (sys: builtins.elem "pg-module" sys.modules) (builtins.attrValues full.nixosConfigurations);
    expected = true;
  };
  testFullExampleIngressHosts = {
    expr =
      let m = full.nixosConfigurations.ingress001.modules; in
      (builtins.elemAt m (builtins.length m - 1)).nixInfra.ingress.virtualHosts."www.example.com".app;
    expected = "web";
  };
  testClusterChecks = {
    expr = builtins.attrNames flake.checks.x86_64-linux;
    expected = [ "lib-tests" "manifest-schema" "nodes-evaluate" ];
  };
  testUnknownNodeModules = {
    expr = (builtins.tryEval (cf.mkClusterFlake { cluster = ../example.nix; nodeModules.nope = [ ]; }).nixInfra).success;
    expected = false;
  };
}
