# Bad specs and the field path each error message must name. Run by
# tests/test_lib.py (test_bad_spec_error_names_its_field): evaluating (evalCluster spec).manifest
# must fail, and stderr must carry a line "  - <field>: ...".
let
  example = import ../example.nix;
  withNodes = n: example // { nodes = example.nodes // n; };
  withApps = a: example // { apps = example.apps // a; };
  withApi = a: example // { apps.api = example.apps.api // a; };
  withProvider = p: example // { provider = example.provider // p; };
  worker = { type = "worker"; serverType = "cpx21"; };
  long = n: builtins.concatStringsSep "" (builtins.genList (_: "a") n);
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
  appNamedLikeAPlatformUnit = { spec = withApps { sshd = { group = "backends"; port = 8081; publish = 5002; nodes = [ "worker001" ]; secrets = [ "x" ]; }; }; field = "apps.sshd.unit"; };
  appNamedLikeASystemUnit = { spec = withApps { systemd-journald = { group = "backends"; port = 8081; publish = 5002; nodes = [ "worker001" ]; envPrefix = "ZZ"; }; }; field = "apps.systemd-journald.unit"; };
  twoAppsOneUnit = { spec = withApps { podman-api = { group = "backends"; port = 8081; publish = 5002; nodes = [ "worker001" ]; }; }; field = "apps.api.unit"; };
  secretNamesDifferOnlyInCase = { spec = withApi { secrets = [ "api-token" "API-TOKEN" ]; }; field = "apps"; };
  healthPathOnTcpCheck = { spec = withApi { healthCheck = { type = "tcp"; path = "/x"; }; }; field = "apps.api.healthCheck.path"; };
  healthCommandOnHttpCheck = { spec = withApi { healthCheck = { command = "true"; }; }; field = "apps.api.healthCheck.command"; };
  healthIntervalOverLeaseLimit = { spec = withApi { healthCheck = { intervalSeconds = 1201; timeoutSeconds = 5; }; }; field = "apps.api.healthCheck.intervalSeconds"; };
  healthTimeoutOverInterval = { spec = withApi { healthCheck = { intervalSeconds = 2; timeoutSeconds = 5; }; }; field = "apps.api.healthCheck.timeoutSeconds"; };
  envPrefixSaslPath = { spec = withApi { envPrefix = "SASL"; }; field = "apps.api.envPrefix"; };
  appUnitIsAPlatformUnit = { spec = withApi { unit = "sshd.service"; }; field = "apps.api.unit"; };
  appUnitIsASystemdUnit = { spec = withApi { unit = "systemd-journald.service"; }; field = "apps.api.unit"; };
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
  # issue 12.1: URL paths follow RFC 3986 (path and query), at most 1024 characters
  appPathWithSpaceAndSemicolon = { spec = withApi { path = "/x;touch /tmp/P"; }; field = "apps.api.path"; };
  appPathCommandSubstitution = { spec = withApi { path = "/v1`id`"; }; field = "apps.api.path"; };
  appPathTooLong = { spec = withApi { path = "/" + long 1024; }; field = "apps.api.path"; };
  appPathAuthority = { spec = withApi { path = "//evil.example/x"; }; field = "apps.api.path"; };
  healthPathWithSpaceAndSemicolon = { spec = withApi { healthCheck.path = "/x;touch /tmp/P"; }; field = "apps.api.healthCheck.path"; };
  healthPathWithNewline = { spec = withApi { healthCheck.path = "/h\nreboot"; }; field = "apps.api.healthCheck.path"; };
  healthCommandBlank = { spec = withApi { healthCheck = { type = "command"; command = " \n"; }; }; field = "apps.api.healthCheck.command"; };
  healthCommandWithCarriageReturn = { spec = withApi { healthCheck = { type = "command"; command = "true\r"; }; }; field = "apps.api.healthCheck.command"; };
  # issue 12.2: OCI image references (distribution/reference grammar)
  imageWithOptions = { spec = withApi { image = "ghcr.io/acme/api:1 --privileged -v /:/host"; }; field = "apps.api.image"; };
  imageUppercasePath = { spec = withApi { image = "ghcr.io/Acme/api:1"; }; field = "apps.api.image"; };
  imageNameTooLong = { spec = withApi { image = "ghcr.io/" + long 250 + ":1"; }; field = "apps.api.image"; };
  imageTagTooLong = { spec = withApi { image = "ghcr.io/acme/api:" + long 129; }; field = "apps.api.image"; };
  imageBadDigest = { spec = withApi { image = "ghcr.io/acme/api@sha256:abc"; }; field = "apps.api.image"; };
  # issue 12.3: systemd unit names
  unitLeadingDash = { spec = withApi { unit = "-Hroot@example.service"; }; field = "apps.api.unit"; };
  unitTooLong = { spec = withApi { unit = long 300 + ".service"; }; field = "apps.api.unit"; };
  unitWithSpace = { spec = withApi { unit = "a b.service"; }; field = "apps.api.unit"; };
  # issue 12.4: env prefixes unique (defaults included), no variable a runtime reads
  envPrefixTwice = { spec = withApps { web = { group = "frontends"; port = 3000; publish = 5002; nodes = [ "worker001" ]; envPrefix = "API"; }; }; field = "apps.api.envPrefix"; };
  envPrefixSameAsDefault = { spec = withApps { db = { group = "services"; port = 5432; publish = 15432; nodes = [ "worker001" ]; }; web = { group = "frontends"; port = 3000; publish = 5002; nodes = [ "worker001" ]; envPrefix = "DB"; }; }; field = "apps.db.envPrefix"; };
  envPrefixLdLibrary = { spec = withApi { envPrefix = "LD_LIBRARY"; path = "/tmp/x"; }; field = "apps.api.envPrefix"; };
  envPrefixPython = { spec = withApi { envPrefix = "PYTHONX"; }; field = "apps.api.envPrefix"; };
  envPrefixDefaultDenied = { spec = withApps { node-x = { group = "backends"; port = 3000; publish = 5002; nodes = [ "worker001" ]; }; }; field = "apps.node-x.envPrefix"; };
  envPrefixNixInfra = { spec = withApi { envPrefix = "NIX_INFRA_API"; }; field = "apps.api.envPrefix"; };
  # issue 12.5: the nix-infra prefix is the platform's in every namespace
  secretReserved = { spec = withApi { secrets = [ "api-token" "nix-infra-etcd-client-key" ]; }; field = "apps.api.secrets[1]"; };
  unitReserved = { spec = withApi { unit = "nix-infra-confd.service"; }; field = "apps.api.unit"; };
  clusterNameReserved = { spec = example // { name = "nix-infra-demo"; }; field = "name"; };
  appNameReserved = { spec = withApps { nix-infra-x = { group = "backends"; port = 3000; publish = 5002; nodes = [ "worker001" ]; envPrefix = "X"; }; }; field = "apps.nix-infra-x"; };
  nodeNameReserved = { spec = withNodes { nix-infra-w = worker; }; field = "nodes.nix-infra-w"; };
  labelKeyReserved = { spec = withNodes { w2 = worker // { labels."nix-infra-team" = "a"; }; }; field = "nodes.w2.labels.\"nix-infra-team\""; };
  # issue 12.8: what Hetzner is given
  adminCidrNotAnAddress = { spec = withProvider { adminCidrs = [ ":/0" ]; }; field = "provider.adminCidrs[0]"; };
  adminCidrHostBits = { spec = withProvider { adminCidrs = [ "203.0.113.7/24" ]; }; field = "provider.adminCidrs[0]"; };
  adminCidrIpv6HostBits = { spec = withProvider { adminCidrs = [ "2001:db8::1/32" ]; }; field = "provider.adminCidrs[0]"; };
  adminCidrIpv6TwoCompressions = { spec = withProvider { adminCidrs = [ "2001::db8::/32" ]; }; field = "provider.adminCidrs[0]"; };
  adminCidrIpv6PrefixTooLong = { spec = withProvider { adminCidrs = [ "2001:db8::/129" ]; }; field = "provider.adminCidrs[0]"; };
  serverNameTooLong = { spec = (withNodes { "worker-with-a-rather-long-name002" = worker; }) // { name = "a-cluster-name-of-thirty-chars"; }; field = "nodes.worker-with-a-rather-long-name002"; };
  clusterNameTooLongForHetzner = { spec = example // { name = "c" + long 52; }; field = "name"; };
  labelKeyPrefixTooLong = { spec = withNodes { w2 = worker // { labels.${long 254 + "/team"} = "a"; }; }; field = "nodes.w2.labels"; };
  serverTypeInjection = { spec = withNodes { w2 = worker // { serverType = "cx22; reboot"; }; }; field = "nodes.w2.serverType"; };
  providerImageInjection = { spec = withProvider { image = "debian-12 --user-data=x"; }; field = "provider.image"; };
  nodeImageInjection = { spec = withNodes { w2 = worker // { image = "$(id)"; }; }; field = "nodes.w2.image"; };
  sshKeyCommentWithCarriageReturn = { spec = withProvider { sshKeys = [ "ssh-ed25519 AAAAC3Nz ops\rssh-ed25519 AAAAC3Nz evil" ]; }; field = "provider.sshKeys[0]"; };
  # volumes
  volumeTooSmall = { spec = withNodes { db = { type = "service"; serverType = "cx22"; volumes.data = { size = 5; mountpoint = "/srv/data"; }; }; }; field = "nodes.db.volumes.data.size"; };
  volumeTooLarge = { spec = withNodes { db = { type = "service"; serverType = "cx22"; volumes.data = { size = 20000; mountpoint = "/srv/data"; }; }; }; field = "nodes.db.volumes.data.size"; };
  volumeMountpointRoot = { spec = withNodes { db = { type = "service"; serverType = "cx22"; volumes.data = { size = 10; mountpoint = "/"; }; }; }; field = "nodes.db.volumes.data.mountpoint"; };
  volumeMountpointUnderNix = { spec = withNodes { db = { type = "service"; serverType = "cx22"; volumes.data = { size = 10; mountpoint = "/nix/store"; }; }; }; field = "nodes.db.volumes.data.mountpoint"; };
  volumeMountpointRelative = { spec = withNodes { db = { type = "service"; serverType = "cx22"; volumes.data = { size = 10; mountpoint = "srv/data"; }; }; }; field = "nodes.db.volumes.data.mountpoint"; };
  volumeMountpointDotDot = { spec = withNodes { db = { type = "service"; serverType = "cx22"; volumes.data = { size = 10; mountpoint = "/srv/../etc"; }; }; }; field = "nodes.db.volumes.data.mountpoint"; };
  volumeMountpointTwice = { spec = withNodes { db = { type = "service"; serverType = "cx22"; volumes = { a = { size = 10; mountpoint = "/srv/data"; }; b = { size = 10; mountpoint = "/srv/data"; }; }; }; }; field = "nodes.db.volumes.a.mountpoint"; };
  volumeBadFilesystem = { spec = withNodes { db = { type = "service"; serverType = "cx22"; volumes.data = { size = 10; mountpoint = "/srv/data"; filesystem = "btrfs"; }; }; }; field = "nodes.db.volumes.data.filesystem"; };
  volumeNameNotDnsLabel = { spec = withNodes { db = { type = "service"; serverType = "cx22"; volumes."Data" = { size = 10; mountpoint = "/srv/data"; }; }; }; field = "nodes.db.volumes.Data"; };
  volumeUnknownField = { spec = withNodes { db = { type = "service"; serverType = "cx22"; volumes.data = { size = 10; mountpoint = "/srv/data"; fs = "ext4"; }; }; }; field = "nodes.db.volumes.data.fs"; };
  appVolumeNotOnNode = { spec = withApi { volume = "data"; }; field = "apps.api.volume"; };
  appVolumeNotALabel = { spec = withApi { volume = 3; }; field = "apps.api.volume"; };
  appVolumeOnTwoNodes = {
    spec = (withNodes { w2 = worker // { volumes.data = { size = 10; mountpoint = "/srv/data"; }; }; }) // { apps.api = example.apps.api // { nodes = [ "w2" "worker001" ]; volume = "data"; }; };
    field = "apps.api.volume";
  };
  volumeAtVarRun = { spec = withNodes { w2 = worker // { volumes.d = { size = 10; mountpoint = "/var/run"; }; }; }; field = "nodes.w2.volumes.d.mountpoint"; };
  volumeOverSystemdState = { spec = withNodes { w2 = worker // { volumes.d = { size = 10; mountpoint = "/var/lib/systemd"; }; }; }; field = "nodes.w2.volumes.d.mountpoint"; };
  volumeOverCredentials = { spec = withNodes { w2 = worker // { volumes.d = { size = 10; mountpoint = "/var/lib/nix-infra/x"; }; }; }; field = "nodes.w2.volumes.d.mountpoint"; };
  volumeAtUsr = { spec = withNodes { w2 = worker // { volumes.d = { size = 10; mountpoint = "/usr"; }; }; }; field = "nodes.w2.volumes.d.mountpoint"; };
  volumeAtVarLib = { spec = withNodes { w2 = worker // { volumes.d = { size = 10; mountpoint = "/var/lib"; }; }; }; field = "nodes.w2.volumes.d.mountpoint"; };
}
