# nix-infra's pure cluster library: builtins only, no nixpkgs.
#
#   let infra = import ./lib; in (infra.evalCluster spec).manifest
#
# One file per concern; the tests of each live in lib/tests/<file>.nix.
let
  constants = import ./constants.nix;
  check = import ./check.nix;
  shell = import ./shell.nix;
  ip = import ./ip.nix;
  spec = import ./spec.nix;
  addresses = import ./addresses.nix;
  mesh = import ./mesh.nix;
  placement = import ./placement.nix;
  waves = import ./waves.nix;
  validate = import ./validate.nix;
  manifest = import ./manifest.nix;
  confd = import ./confd.nix;
  nodeconfig = import ./nodeconfig.nix;

  # shape errors first; semantic ones (which need a well-shaped spec) only without them
  errorsOf =
    rawSpec: s: addrs: hosted:
    let
      shapeErrors = spec.shapeErrors rawSpec;
    in
    if shapeErrors != [ ] then shapeErrors else validate.semanticErrors s addrs hosted;

  specErrors =
    rawSpec:
    let
      s = spec.normalize rawSpec;
    in
    errorsOf rawSpec s (addresses.assign s.provider.network s.nodes) (placement.appsByNode s.apps);

  formatErrors =
    errors:
    "nix-infra: the cluster spec has ${toString (builtins.length errors)} error${if builtins.length errors == 1 then "" else "s"}:\n"
    + builtins.concatStringsSep "\n" (map (e: "  - ${e}") errors);
in
{
  inherit constants check shell ip spec addresses mesh placement waves validate manifest confd nodeconfig;

  /**
    Every error of a raw cluster spec, without throwing: its shape errors
    (spec.shapeErrors) or, when there are none, its semantic errors
    (validate.semanticErrors). Each message starts with the field path.
    evalCluster throws exactly these.

    Example: specErrors (import ./example.nix) => [ ]
    Example: specErrors ((import ./example.nix) // { name = "Bad"; })
      => [ "name: \"Bad\" is not a DNS label ..." ]
  */
  inherit specErrors;

  /**
    Evaluate a cluster spec (see docs/cluster-spec.md) into everything the
    modules and the orchestrator need.

    Takes the spec attrset; returns
      { spec      normalized spec, every default filled
        nodes     per node: name type privateIp consumes hostedApps
                  consumedApps consumerEnv credentials credentialUnits firewall
                  wave etcd, and config: the values of its nixInfra.* options
        etcdSeed  etcd key -> JSON value (static part of the mesh)
        waves     list of lists of node names
        manifest  the version-1 manifest (plain JSON data) }
    Throws one message listing every error, each naming its field path,
    as soon as any attribute of the result is used.

    Example: (evalCluster (import ./example.nix)).manifest.nodes.ctrl001.privateIp
      => "10.10.32.1"
  */
  evalCluster =
    rawSpec:
    let
      s = spec.normalize rawSpec;
      addrs = addresses.assign s.provider.network s.nodes;
      hosted = placement.appsByNode s.apps;
      errors = errorsOf rawSpec s addrs hosted;

      ipOf = builtins.mapAttrs (_: a: a.ip) addrs;
      ws = waves.waves s.nodes;
      waveOf = waves.waveOf ws;
      byGroup = mesh.appsByGroup s.apps;
      ctrls = builtins.filter (n: s.nodes.${n}.type == "ctrl") (builtins.attrNames s.nodes);
      seed = mesh.seed s.nodes s.apps ipOf;

      etcd = {
        endpoints = map (n: "https://${ipOf.${n}}:${toString constants.ports.etcdClient}") ctrls;
        initialCluster = builtins.concatStringsSep "," (map (n: "${n}=https://${ipOf.${n}}:${toString constants.ports.etcdPeer}") ctrls);
        members = ctrls;
        clientPort = constants.ports.etcdClient;
        peerPort = constants.ports.etcdPeer;
      };

      nodeData = builtins.mapAttrs (
        name: n:
        let
          hostedApps = hosted.${name} or [ ];
          consumedApps = builtins.concatMap (g: byGroup.${g}) n.consumes;
        in
        {
          inherit name hostedApps consumedApps;
          inherit (n) type consumes;
          privateIp = ipOf.${name};
          consumerEnv = mesh.consumerEnv consumedApps;
          credentials = placement.nodeCredentials n.type hostedApps;
          credentialUnits = placement.nodeCredentialUnits n.type hostedApps;
          firewall = placement.firewall n.type hostedApps;
          wave = waveOf.${name};
          etcd = etcd // { member = n.type == "ctrl"; };
        }
      ) s.nodes;
      # what each node's NixOS modules are given (lib/nodeconfig.nix)
      withConfig = builtins.mapAttrs (
        name: d:
        d // { config = nodeconfig.nodeConfig { inherit name d; n = s.nodes.${name}; provider = s.provider; }; }
      ) nodeData;
    in
    if errors != [ ] then
      throw (formatErrors errors)
    else
      {
        spec = s;
        nodes = withConfig;
        etcdSeed = seed;
        waves = ws;
        manifest = manifest.manifest {
          inherit s nodeData seed;
          etcd = { inherit (etcd) endpoints initialCluster members clientPort peerPort; };
          waves = ws;
          inherit (manifest) nodeLabels volumeLabels isStateful;
        };
      };
}
