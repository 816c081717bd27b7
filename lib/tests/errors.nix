# Bad specs and the field path each error message must name. Run by
# orchestrator/tests/test_lib_nix.py: evaluating (evalCluster spec).manifest
# must fail, and stderr must carry a line "  - <field>: ...".
let
  example = import ../example.nix;
  withNodes = n: example // { nodes = example.nodes // n; };
  withApps = a: example // { apps = example.apps // a; };
  withApi = a: example // { apps.api = example.apps.api // a; };
  withProvider = p: example // { provider = example.provider // p; };
  worker = { type = "worker"; serverType = "cpx21"; };
in
{
  clusterNameNotDnsLabel = { spec = example // { name = "My_Cluster"; }; field = "name"; };
  clusterNameMissing = { spec = removeAttrs example [ "name" ]; field = "spec.name"; };
  unknownTopField = { spec = example // { node = { }; }; field = "spec.node"; };
  nodeNameNotDnsLabel = { spec = withNodes { "Worker_2" = worker; }; field = "nodes.Worker_2"; };
  unknownNodeType = { spec = withNodes { db = { type = "database"; serverType = "cx22"; }; }; field = "nodes.db.type"; };
  unknownNodeField = { spec = withNodes { db = worker // { servertype = "cx22"; }; }; field = "nodes.db.servertype"; };
  missingServerType = { spec = withNodes { db = { type = "service"; }; }; field = "nodes.db.serverType"; };
  unknownProviderLocation = { spec = withProvider { location = "fra1"; }; field = "provider.location"; };
  unknownNodeLocation = { spec = withNodes { w2 = worker // { location = "ams3"; }; }; field = "nodes.w2.location"; };
  nodeOutsideNetworkZone = { spec = withNodes { w2 = worker // { location = "hil"; }; }; field = "nodes.w2.location"; };
  unknownNetworkZone = { spec = withProvider { networkZone = "eu-west"; }; field = "provider.networkZone"; };
  unknownProviderType = { spec = withProvider { type = "aws"; }; field = "provider.type"; };
  networkNotCidr = { spec = withProvider { network = "10.10.0.1/16"; }; field = "provider.network"; };
  networkNotPrivate = { spec = withProvider { network = "8.8.0.0/16"; }; field = "provider.network"; };
  appUnitNotAService = { spec = withApi { unit = "postgresql"; }; field = "apps.api.unit"; };
  networkOverlapsOverlay = { spec = withProvider { network = "10.0.0.0/8"; }; field = "provider.network"; };
  networkTooSmall = { spec = withProvider { network = "10.10.0.0/25"; }; field = "provider.network"; };
  badSshKey = { spec = withProvider { sshKeys = [ "not a key" ]; }; field = "provider.sshKeys[0]"; };
  noSshKeys = { spec = withProvider { sshKeys = [ ]; }; field = "provider.sshKeys"; };
  noAdminCidrs = { spec = withProvider { adminCidrs = [ ]; }; field = "provider.adminCidrs"; };
  badAdminCidr = { spec = withProvider { adminCidrs = [ "203.0.113.0" ]; }; field = "provider.adminCidrs[0]"; };
  evenCtrlCount = { spec = withNodes { ctrl002 = { type = "ctrl"; serverType = "cx22"; }; }; field = "nodes"; };
  noCtrlNode = { spec = example // { nodes = { inherit (example.nodes) worker001; }; }; field = "nodes"; };
  appOnMissingNode = { spec = withApi { nodes = [ "worker009" ]; }; field = "apps.api.nodes"; };
  appOnCtrlNode = { spec = withApi { nodes = [ "ctrl001" ]; }; field = "apps.api.nodes"; };
  appOnIngressNode = { spec = (withNodes { edge001 = { type = "ingress"; serverType = "cx22"; }; }) // { apps.api = example.apps.api // { nodes = [ "edge001" ]; }; }; field = "apps.api.nodes"; };
  appWithoutNodes = { spec = withApi { nodes = [ ]; }; field = "apps.api.nodes"; };
  duplicatePublishPort = { spec = withApps { web = { group = "frontends"; port = 3000; publish = 5001; nodes = [ "worker001" ]; }; }; field = "apps.api.publish"; };
  reservedPublishPort = { spec = withApi { publish = 2379; }; field = "apps.api.publish"; };
  portOutOfRange = { spec = withApi { port = 70000; }; field = "apps.api.port"; };
  publishOutOfRange = { spec = withApi { publish = 0; }; field = "apps.api.publish"; };
  portNotInt = { spec = withApi { port = "8080"; }; field = "apps.api.port"; };
  samePortOnOneNode = { spec = withApps { web = { group = "frontends"; port = 8080; publish = 5002; nodes = [ "worker001" ]; }; }; field = "apps.api.port"; };
  unsafeSecretName = { spec = withApi { secrets = [ "../etc/shadow" ]; }; field = "apps.api.secrets[0]"; };
  unknownGroup = { spec = withApi { group = "databases"; }; field = "apps.api.group"; };
  badEnvPrefix = { spec = withApi { envPrefix = "api-x"; }; field = "apps.api.envPrefix"; };
  badProtocol = { spec = withApi { protocol = "udp"; }; field = "apps.api.protocol"; };
  badPath = { spec = withApi { path = "v1"; }; field = "apps.api.path"; };
  commandCheckWithoutCommand = { spec = withApi { healthCheck = { type = "command"; }; }; field = "apps.api.healthCheck.command"; };
  appNameNotDnsLabel = { spec = withApps { "My.App" = { group = "backends"; port = 1; publish = 6000; nodes = [ "worker001" ]; }; }; field = "apps.My.App"; };
  privateIpOutsideNetwork = { spec = withNodes { db = { type = "service"; serverType = "cx22"; privateIp = "10.20.0.5"; }; }; field = "nodes.db.privateIp"; };
  privateIpIsGateway = { spec = withNodes { db = { type = "service"; serverType = "cx22"; privateIp = "10.10.0.1"; }; }; field = "nodes.db.privateIp"; };
  privateIpNotAnAddress = { spec = withNodes { db = { type = "service"; serverType = "cx22"; privateIp = "10.10.0"; }; }; field = "nodes.db.privateIp"; };
  privateIpTakenTwice = {
    spec = withNodes { db = { type = "service"; serverType = "cx22"; privateIp = "10.10.0.7"; }; cache = { type = "service"; serverType = "cx22"; privateIp = "10.10.0.7"; }; };
    field = "nodes.cache.privateIp";
  };
  privateIpTakesDerivedAddress = { spec = withNodes { db = { type = "service"; serverType = "cx22"; privateIp = "10.10.32.1"; }; }; field = "nodes.ctrl001.privateIp"; };
  nodeNumberTooLarge = { spec = withProvider { network = "10.10.0.0/24"; } // { nodes = example.nodes // { worker040 = worker; }; }; field = "nodes.worker040"; };
  badLabelValue = { spec = withNodes { w2 = worker // { labels.team = "a b"; }; }; field = "nodes.w2.labels.\"team\""; };
  reservedLabelPrefix = { spec = withNodes { w2 = worker // { labels."nix-infra/cluster" = "other"; }; }; field = "nodes.w2.labels.\"nix-infra/cluster\""; };
  badConsumesGroup = { spec = withNodes { w2 = worker // { consumes = [ "backend" ]; }; }; field = "nodes.w2.consumes[0]"; };
}
