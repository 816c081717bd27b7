# The service mesh data: what each node consumes and the static etcd seed.
#
# Data model (kept compatible with nix-infra):
#   /cluster/nodes/<node>                    {"name","ipv4","services":[groups]}
#   /cluster/<group>/<app>/meta_data         {"publish":{"port"},"port","env_prefix","env":{...}}
#   /cluster/<group>/<app>/instances/<node>  written by the nodes themselves
#   /coreos.com/network/config               flannel's network config (overlayConfig)
# The seed holds only the static part; instances/ is never seeded.
let
  constants = import ./constants.nix;
in
rec {
  /**
    The etcd key of a node's record.

    Example: nodeKey "worker001" => "/cluster/nodes/worker001"
  */
  nodeKey = name: "/cluster/nodes/${name}";

  /**
    The etcd key of an app's meta data.

    Example: metaDataKey { group = "backends"; name = "api"; } => "/cluster/backends/api/meta_data"
  */
  metaDataKey = app: "/cluster/${app.group}/${app.name}/meta_data";

  /**
    The etcd prefix under which an app's instances register.

    Example: instancesPrefix { group = "backends"; name = "api"; } => "/cluster/backends/api/instances/"
  */
  instancesPrefix = app: "/cluster/${app.group}/${app.name}/instances/";

  /**
    The value of a node's record.

    Takes a normalized node and its address; returns
    { name; ipv4; services = consumed groups; }.

    Example: nodeRecord { name = "w1"; consumes = [ "backends" ]; } "10.10.64.1"
      => { name = "w1"; ipv4 = "10.10.64.1"; services = [ "backends" ]; }
  */
  nodeRecord = node: ipv4: {
    inherit (node) name;
    inherit ipv4;
    services = node.consumes;
  };

  /**
    The environment a consumer gets for an app, without its prefix.

    Example: appEnv { protocol = "http"; publish = 5001; path = "/"; }
      => { PROTOCOL = "http"; HOST = "127.0.0.1"; PORT = "5001"; PATH = "/"; }
  */
  appEnv = app: {
    PROTOCOL = app.protocol;
    HOST = "127.0.0.1";
    PORT = toString app.publish;
    PATH = app.path;
  };

  /**
    The value of an app's meta_data record. `port` is the port the app's
    instances listen on: the mesh renders an instance only when its record
    names this port (and its node's address), so a node cannot point
    consumers at another port.

    Example: metaData { publish = 5001; port = 8080; envPrefix = "API"; protocol = "http"; path = "/"; }
      => { publish = { port = 5001; }; port = 8080; env_prefix = "API"; env = { ... }; }
  */
  metaData = app: {
    publish.port = app.publish;
    inherit (app) port;
    env_prefix = app.envPrefix;
    env = appEnv app;
  };

  /**
    The etcd key of flannel's network config (flannel's default prefix
    /coreos.com/network).

    Example: overlayConfigKey => "/coreos.com/network/config"
  */
  overlayConfigKey = "/coreos.com/network/config";

  /**
    flannel's network config for the overlay: the network, one /24 per node,
    and the WireGuard backend on the given UDP port. The orchestrator seeds it
    with the admin certificate; the nodes only read it (modules/overlay.nix
    turns off NixOS's flannel unit's own write). The same attributes NixOS's
    services.flannel would write (Network, SubnetLen, Backend).

    Takes { network; port; }; returns the config attrset.

    Example: overlayConfig { network = "10.244.0.0/16"; port = 51820; }
      => { Network = "10.244.0.0/16"; SubnetLen = 24; Backend = { Type = "wireguard"; ListenPort = 51820; PersistentKeepaliveInterval = 25; }; }
  */
  overlayConfig =
    { network, port }:
    {
      Network = network;
      SubnetLen = 24;
      Backend = {
        Type = "wireguard";
        ListenPort = port;
        PersistentKeepaliveInterval = 25;
      };
    };

  /**
    The cluster's overlay config (constants.overlay.network, constants.ports.wireguard).

    Example: clusterOverlayConfig.Network => "10.244.0.0/16"
  */
  clusterOverlayConfig = overlayConfig {
    inherit (constants.overlay) network;
    port = constants.ports.wireguard;
  };

  /**
    The static etcd seed: an attrset from key to JSON-able value: the node
    records, the apps' meta_data and flannel's network config.

    Takes normalized nodes, normalized apps and the node addresses
    (name -> "a.b.c.d").

    Example: seed { w1 = ...; } { api = ...; } { w1 = "10.10.64.1"; }
      => { "/cluster/nodes/w1" = { ... }; "/cluster/backends/api/meta_data" = { ... }; "/coreos.com/network/config" = { ... }; }
  */
  seed =
    nodes: apps: addresses:
    builtins.listToAttrs (
      map (n: { name = nodeKey n.name; value = nodeRecord n addresses.${n.name}; }) (builtins.attrValues nodes)
      ++ map (a: { name = metaDataKey a; value = metaData a; }) (builtins.attrValues apps)
      ++ [ { name = overlayConfigKey; value = clusterOverlayConfig; } ]
    );

  /**
    The environment variables a consumer gets for the apps it consumes:
    <PREFIX>_HOST, _PORT, _PROTOCOL, _PATH per app.

    Example: consumerEnv [ { envPrefix = "API"; publish = 5001; ... } ]
      => { API_HOST = "127.0.0.1"; API_PORT = "5001"; ... }
  */
  consumerEnv =
    apps:
    builtins.listToAttrs (
      builtins.concatMap (
        a:
        let env = appEnv a; in
        map (k: { name = "${a.envPrefix}_${k}"; value = env.${k}; }) (builtins.attrNames env)
      ) apps
    );

  /**
    Group apps by mesh group: { frontends = [..]; backends = [..]; services = [..]; }
    (every group present, lists sorted by app name).

    Example: (appsByGroup { api = { group = "backends"; ... }; }).backends => [ { name = "api"; ... } ]
  */
  appsByGroup =
    apps:
    { frontends = [ ]; backends = [ ]; services = [ ]; } // builtins.groupBy (a: a.group) (builtins.attrValues apps);
}
