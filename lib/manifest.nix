# The manifest: the one JSON document the orchestrator reads (version 1,
# documented in docs/manifest.md, schema in docs/manifest.schema.json).
let
  c = import ./constants.nix;
  ip = import ./ip.nix;
in
{
  /**
    The labels every cloud resource of a node carries: the user's labels
    plus the ones nix-infra owns (cluster, node name, node type).

    Example: nodeLabels "demo" { name = "w1"; type = "worker"; labels = { team = "a"; }; }
      => { team = "a"; "nix-infra/cluster" = "demo"; "nix-infra/node" = "w1"; "nix-infra/type" = "worker"; }
  */
  nodeLabels =
    cluster: n:
    n.labels
    // {
      "${c.labelPrefix}cluster" = cluster;
      "${c.labelPrefix}node" = n.name;
      "${c.labelPrefix}type" = n.type;
    };

  /**
    The labels of one of a node's volumes: the node's labels (nodeLabels)
    plus `nix-infra/volume`.

    Example: volumeLabels { "nix-infra/cluster" = "demo"; "nix-infra/node" = "db1"; "nix-infra/type" = "service"; } "pgdata"
      => { ...; "nix-infra/volume" = "pgdata"; }
  */
  volumeLabels = labels: vol: labels // { "${c.labelPrefix}volume" = vol; };

  /**
    Whether a node holds data a re-install would destroy: it has a volume,
    or hosts an app with a volume or a stateful unit (PostgreSQL, Redis or
    Valkey: constants.statefulUnitPattern). Such a node gets Hetzner's
    delete and rebuild protection, and `destroy` refuses it without
    --allow-data-loss.

    Takes the normalized node and the normalized apps placed on it.

    Example: isStateful { volumes = { }; } [ { volume = null; unit = "postgresql.service"; } ] => true
  */
  isStateful =
    n: hostedApps:
    n.volumes != { }
    || builtins.any (a: a.volume != null || builtins.match c.statefulUnitPattern a.unit != null) hostedApps;

  /**
    Build the manifest from a normalized spec and its derived data.

    Takes { s; nodeData; waves; seed; etcd; } where nodeData is evalCluster's
    per-node data and etcd the control plane's endpoints; returns plain
    JSON-able data, `version = 1`.

    Example: (manifest { ... }).version => 1
  */
  manifest =
    { s, nodeData, waves, seed, etcd, nodeLabels, volumeLabels, isStateful }:
    let
      net = ip.parseCidr s.provider.network;
    in
    {
      version = c.manifestVersion;
      cluster = s.name;
      provider = {
        inherit (s.provider) type location networkZone image;
      };
      network = {
        ipRange = s.provider.network;
        subnet = s.provider.network;
        gateway = ip.formatIPv4 (net.base + 1);
        zone = s.provider.networkZone;
      };
      labels = {
        "${c.labelPrefix}cluster" = s.name;
      };
      inherit (s.provider) sshKeys adminCidrs;
      nodes = builtins.mapAttrs (
        name: d:
        let n = s.nodes.${name}; in
        {
          inherit name;
          inherit (n) type location serverType image consumes;
          privateIp = d.privateIp;
          labels = nodeLabels s.name n;
          system = "nixosConfigurations.${name}";
          inherit (d) credentials credentialUnits wave firewall;
          apps = map (a: a.name) d.hostedApps;
          volumes = builtins.mapAttrs (vol: v: {
            inherit (v) size mountpoint filesystem;
            labels = volumeLabels (nodeLabels s.name n) vol;
          }) n.volumes;
          stateful = isStateful n d.hostedApps;
        }
      ) nodeData;
      apps = builtins.mapAttrs (_: a: {
        inherit (a) name group port publish nodes secrets protocol path healthCheck image unit volume;
        envPrefix = a.envPrefix;
      }) s.apps;
      inherit waves etcd;
      etcdSeed = seed;
      # every secret some node needs: the apps' and, with a registry node, the cache key
      secrets = builtins.attrNames (builtins.listToAttrs (map (x: { name = x; value = null; }) (builtins.concatMap (d: d.credentials) (builtins.attrValues nodeData))));
    };
}
