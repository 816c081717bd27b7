# What the NixOS modules of one node are given: plain data, computed here so
# that the modules only map it onto options (and the lib tests cover it).
# mkClusterFlake passes `(evalCluster spec).nodes.<name>.config` as the
# node's `nixInfra` option values.
let
  c = import ./constants.nix;
  mesh = import ./mesh.nix;
  confd = import ./confd.nix;
  placement = import ./placement.nix;
  shell = import ./shell.nix;
in
rec {
  # Where nix-infra keeps its state on a node; the orchestrator writes credentials here.
  credentialsDir = "/var/lib/nix-infra/credentials";
  meshConfigPath = "/var/lib/nix-infra/mesh/haproxy.cfg";

  /**
    The shell command that decides whether an app instance is healthy, from
    its normalized healthCheck: an HTTP GET of its path, a TCP connect, or
    the user's command; each bounded by timeoutSeconds. The registration
    script runs it with `bash -c`, so every word lib builds is quoted
    (shell.escapeShellArg): a path such as "/h?a=1&b=2" stays one word.

    Example: healthCommand { port = 8080; healthCheck = { type = "http"; path = "/h"; timeoutSeconds = 5; }; }
      => "curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8080/h"
    Example: healthCommand { port = 8080; healthCheck = { type = "http"; path = "/h?a=1&b=2"; timeoutSeconds = 5; }; }
      => "curl -fsS -o /dev/null --max-time 5 'http://127.0.0.1:8080/h?a=1&b=2'"
  */
  healthCommand =
    app:
    let
      h = app.healthCheck;
      t = toString h.timeoutSeconds;
    in
    if h.type == "http" then
      shell.escapeShellArgs [ "curl" "-fsS" "-o" "/dev/null" "--max-time" t "http://127.0.0.1:${toString app.port}${h.path}" ]
    else if h.type == "tcp" then
      shell.escapeShellArgs [ "timeout" t "bash" "-c" "</dev/tcp/127.0.0.1/${toString app.port}" ]
    else
      h.command;

  /**
    The arguments of an app instance's registration unit (modules/scripts/register-instance.sh).

    Takes the node name, its private IP and a normalized app; returns
    { app; group; node; address; port; ttl; interval; healthCmd; }. The lease
    TTL is three health intervals: a dead node vanishes from the mesh within it.

    Example: (registration "w1" "10.10.64.1" { name = "api"; group = "backends"; port = 8080; healthCheck = { type = "tcp"; intervalSeconds = 10; timeoutSeconds = 5; }; }).ttl
      => 30
  */
  registration = node: address: app: {
    app = app.name;
    inherit (app) group port;
    inherit node address;
    interval = app.healthCheck.intervalSeconds;
    ttl = 3 * app.healthCheck.intervalSeconds;
    # the script bounds each check by it (the command's own bound is timeoutSeconds too)
    timeout = app.healthCheck.timeoutSeconds;
    healthCmd = healthCommand app;
  };

  /**
    The data of one node's modules (the values of its nixInfra.* options).

    Takes { name; n (normalized node); d (evalCluster's node data: privateIp,
    hostedApps, consumedApps, consumerEnv, credentials, credentialUnits,
    firewall, etcd); provider (normalized provider); }.

    Example: (nodeConfig { ... }).node.name => "worker001"
  */
  nodeConfig =
    { name, n, d, provider }:
    {
      node = {
        inherit name;
        inherit (n) type;
        inherit (d) privateIp firewall;
        inherit (provider) sshKeys adminCidrs;
        privateNetwork = provider.network;
      };
      etcd = {
        inherit (d.etcd) endpoints initialCluster members clientPort peerPort;
      };
      mesh = {
        enable = d.consumes != [ ];
        template = confd.haproxyTemplate name;
        emptyConfig = confd.header;
        configPath = meshConfigPath;
        consumerEnv = d.consumerEnv;
      };
      ingress = {
        # the frontends this node's mesh proxy serves: app name -> 127.0.0.1 port
        frontends = builtins.listToAttrs (
          map (a: { name = a.name; value = a.publish; }) (builtins.filter (a: a.group == "frontends") d.consumedApps)
        );
      };
      overlay = {
        network = c.overlay.network;
        port = c.ports.wireguard;
      };
      apps = builtins.listToAttrs (
        map (a: {
          name = a.name;
          value = {
            inherit (a) image port secrets;
            unit = placement.appUnit a;
            registration = registration name d.privateIp a;
          };
        }) d.hostedApps
      );
      # the node's volumes: name -> { size (GB); mountpoint; filesystem; };
      # the device is /dev/disk/by-id/scsi-0HC_Volume_<id>, id from facts/<node>.json
      volumes = n.volumes;
      credentials = {
        dir = credentialsDir;
        names = d.credentials;
        units = d.credentialUnits;
      };
    };
}
