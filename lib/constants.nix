# The fixed vocabulary of the cluster model. One place, so error messages,
# docs and tests all say the same thing.
{
  manifestVersion = 1;

  nodeTypes = [ "ctrl" "worker" "service" "ingress" "registry" ];

  groups = [ "frontends" "backends" "services" ];

  providerTypes = [ "hetzner" "local" ];

  # Hetzner Cloud locations and the network zone each belongs to; a private
  # network spans exactly one zone, so every node must sit in that zone.
  locationZones = {
    fsn1 = "eu-central";
    nbg1 = "eu-central";
    hel1 = "eu-central";
    ash = "us-east";
    hil = "us-west";
    sin = "ap-southeast";
  };

  # Which mesh groups a node consumes when `consumes` is not set.
  defaultConsumes = {
    ctrl = [ ];
    worker = [ "services" "backends" ];
    service = [ "services" ];
    ingress = [ "frontends" ];
    registry = [ ];
  };

  # Node types that run apps; ctrl, ingress and registry host none.
  appHostTypes = [ "worker" "service" ];

  # Ports the platform itself binds on nodes (ssh, ingress http/https, etcd
  # client/peer); an app may neither listen on nor publish one of them.
  reservedPorts = [ 22 80 443 2379 2380 ];

  # Platform ports, opened by the node's firewall.
  ports = {
    ssh = 22;
    http = 80;
    https = 443;
    etcdClient = 2379;
    etcdPeer = 2380;
    # flannel's wireguard backend (UDP), private interface only.
    wireguard = 51820;
    # docker registry on registry nodes, private interface only.
    registry = 5000;
    # the cluster's Nix binary cache (nix-serve) on registry nodes, private interface only.
    binaryCache = 5080;
  };

  # Address plan of the private network: it is cut into 8 equal blocks; block
  # 0 holds the network address and Hetzner's gateway, blocks 1-5 hold the
  # numbered nodes of one type each, blocks 6-7 the nodes whose names carry no
  # number (placed by hash). See lib/addresses.nix.
  addressBlocks = {
    ctrl = 1;
    worker = 2;
    service = 3;
    ingress = 4;
    registry = 5;
    hashed = 6;
  };

  # The flannel overlay (pod/container addresses), one /24 per node; it must
  # not overlap the private network (validated).
  overlay = {
    network = "10.244.0.0/16";
  };

  # The secret a registry node signs the cluster's binary cache with
  # (`nix-store --generate-binary-cache-key`); delivered like an app secret.
  cacheKeySecret = "nix-infra-cache-key";

  # Labels the tool owns on every cloud resource; users may not set them.
  labelPrefix = "nix-infra/";
}
