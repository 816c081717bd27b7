# Where apps run, and what that means per node: apps hosted, credentials
# needed, firewall ports.
let
  c = import ./constants.nix;
  check = import ./check.nix;
in
rec {
  /**
    The apps placed on each node: node name -> list of normalized apps
    (sorted by app name). Nodes hosting nothing are absent.

    Example: appsByNode { api = { name = "api"; nodes = [ "w1" "w2" ]; }; }
      => { w1 = [ { name = "api"; ... } ]; w2 = [ { name = "api"; ... } ]; }
  */
  appsByNode =
    apps:
    builtins.mapAttrs (_: map (p: p.app)) (
      builtins.groupBy (p: p.node) (builtins.concatMap (a: map (node: { inherit node; app = a; }) a.nodes) (builtins.attrValues apps))
    );

  /**
    The credential names a node needs: the secrets of the apps placed on it,
    sorted and without duplicates.

    Example: credentials [ { secrets = [ "b" "a" ]; } { secrets = [ "a" ]; } ] => [ "a" "b" ]
  */
  credentials = hosted: check.uniqueSorted (builtins.concatMap (a: a.secrets) hosted);

  /**
    The credential names of a node of a given type: its apps' secrets, plus
    the binary cache's signing key on registry nodes.

    Example: nodeCredentials "registry" [ ] => [ "nix-infra-cache-key" ]
  */
  nodeCredentials =
    type: hosted: check.uniqueSorted (credentials hosted ++ (if type == "registry" then [ c.cacheKeySecret ] else [ ]));

  /**
    Per credential of a node of a given type, the units that load it: the
    apps' units, and nix-serve.service for the cache key of a registry node.

    Example: (nodeCredentialUnits "registry" [ ])."nix-infra-cache-key" => [ "nix-serve.service" ]
  */
  nodeCredentialUnits =
    type: hosted:
    credentialUnits hosted // (if type == "registry" then { ${c.cacheKeySecret} = [ "nix-serve.service" ]; } else { });

  /**
    The systemd unit of an app: the one that loads its credentials
    (LoadCredentialEncrypted=) and is restarted when one changes. The spec
    normalizes it: podman-<name>.service for a container (as
    virtualisation.oci-containers names it), else the app's `unit`.

    Example: appUnit { name = "api"; unit = "podman-api.service"; } => "podman-api.service"
  */
  appUnit = a: a.unit or "podman-${a.name}.service";

  /**
    Per credential of a node, the units that load it (sorted): what a
    rotation restarts.

    Example: credentialUnits [ { name = "api"; secrets = [ "t" ]; } { name = "web"; secrets = [ "t" ]; } ]
      => { t = [ "podman-api.service" "podman-web.service" ]; }
  */
  credentialUnits =
    hosted:
    builtins.mapAttrs (_: check.uniqueSorted) (
      builtins.zipAttrsWith (_: vs: vs) (builtins.concatMap (a: map (s: { ${s} = appUnit a; }) a.secrets) hosted)
    );

  /**
    Firewall ports of a node.

    Takes the node type and the apps it hosts; returns
    { public = { tcp; udp; }; private = { tcp; udp; }; } with sorted port
    lists. Public SSH is further limited to provider.adminCidrs by the cloud
    firewall; private ports are opened on the private interface only.

    Example: firewall "ingress" [ ]
      => { public = { tcp = [ 22 80 443 ]; udp = [ ]; }; private = { tcp = [ ]; udp = [ 51820 ]; }; }
  */
  firewall =
    type: hosted:
    let
      p = c.ports;
      sortInts = builtins.sort builtins.lessThan;
    in
    {
      public = {
        tcp = [ p.ssh ] ++ (if type == "ingress" then [ p.http p.https ] else [ ]);
        udp = [ ];
      };
      private = {
        tcp = sortInts (
          (if type == "ctrl" then [ p.etcdClient p.etcdPeer ] else [ ])
          ++ (if type == "registry" then [ p.registry p.binaryCache ] else [ ])
          ++ map (a: a.port) hosted
        );
        udp = [ p.wireguard ];
      };
    };
}
