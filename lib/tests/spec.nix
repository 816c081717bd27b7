let
  spec = import ../spec.nix;
  example = import ../example.nix;
  norm = spec.normalize example;
in
{
  testExampleHasNoShapeErrors = { expr = spec.shapeErrors example; expected = [ ]; };
  testProviderDefaults = {
    expr = (spec.normalize { name = "x"; provider = { location = "hel1"; sshKeys = [ ]; }; nodes = { }; }).provider;
    expected = { type = "hetzner"; location = "hel1"; networkZone = "eu-central"; network = "10.10.0.0/16"; image = "debian-12"; sshKeys = [ ]; adminCidrs = [ ]; };
  };
  testNodeDefaults = {
    expr = norm.nodes.ctrl001;
    expected = { name = "ctrl001"; type = "ctrl"; serverType = "cx22"; location = "fsn1"; image = "debian-12"; privateIp = null; labels = { }; consumes = [ ]; volumes = { }; };
  };
  testNodeLocationOverride = { expr = norm.nodes.worker001.location; expected = "nbg1"; };
  testWorkerConsumesByDefault = { expr = norm.nodes.worker001.consumes; expected = [ "services" "backends" ]; };
  testAppDefaults = {
    expr = norm.apps.api;
    expected = {
      name = "api"; group = "backends"; port = 8080; publish = 5001; nodes = [ "worker001" ];
      envPrefix = "API"; image = "ghcr.io/acme/api:1.4"; unit = "podman-api.service"; secrets = [ "api-token" ];
      protocol = "http"; path = "/"; volume = null;
      healthCheck = { type = "http"; path = "/"; command = null; intervalSeconds = 10; timeoutSeconds = 5; };
    };
  };
  testVolumeDefaults = {
    expr = (spec.normalize (example // { nodes = example.nodes // { db = { type = "service"; serverType = "cx22"; volumes.pgdata = { size = 20; mountpoint = "/var/lib/postgresql"; }; }; }; })).nodes.db.volumes;
    expected = { pgdata = { size = 20; mountpoint = "/var/lib/postgresql"; filesystem = "ext4"; }; };
  };
  testVolumeShapeErrors = {
    expr = spec.shapeErrors (example // {
      nodes = example.nodes // {
        db = {
          type = "service"; serverType = "cx22";
          volumes = {
            a = { size = 9; mountpoint = "/var/lib/a/"; filesystem = "btrfs"; };
            b = { size = 10241; mountpoint = "/nix/store"; };
            c = { size = "20"; mountpoint = "/"; };
            d = { mountpoint = "/var/lib/../etc"; extra = 1; };
            "Bad_Name" = { size = 10; mountpoint = "/srv/x"; };
            e = { size = 10; mountpoint = "/srv/x"; };
            f = { size = 10; mountpoint = "/srv/x/y"; };
          };
        };
      };
    });
    expected = [
      "nodes.db.volumes.Bad_Name: the volume name \"Bad_Name\" is not a DNS label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)"
      "nodes.db.volumes.a.size: 9 is not allowed; expected a whole number of GB from 10 to 10240 (Hetzner's volume sizes)"
      "nodes.db.volumes.a.mountpoint: \"/var/lib/a/\" is not allowed; expected a normalised absolute path such as \"/var/lib/postgresql\" ('/'-separated components of letters, digits, '.', '_', '-', not starting with '.' or '-'; no trailing '/'; at most 255 characters), below /var/lib, /srv, /data, /mnt (or /srv, /data, /mnt themselves), not /nix, /boot, /etc, /run, /proc, /sys, /dev, /tmp, /var/lib/nix-infra, /var/lib/systemd, /var/lib/nixos, /var/lib/private, /var/lib/containers or under them"
      "nodes.db.volumes.a.filesystem: \"btrfs\" is not allowed; expected one of: ext4, xfs"
      "nodes.db.volumes.b.size: 10241 is not allowed; expected a whole number of GB from 10 to 10240 (Hetzner's volume sizes)"
      "nodes.db.volumes.b.mountpoint: \"/nix/store\" is not allowed; expected a normalised absolute path such as \"/var/lib/postgresql\" ('/'-separated components of letters, digits, '.', '_', '-', not starting with '.' or '-'; no trailing '/'; at most 255 characters), below /var/lib, /srv, /data, /mnt (or /srv, /data, /mnt themselves), not /nix, /boot, /etc, /run, /proc, /sys, /dev, /tmp, /var/lib/nix-infra, /var/lib/systemd, /var/lib/nixos, /var/lib/private, /var/lib/containers or under them"
      "nodes.db.volumes.c.size: \"20\" is not allowed; expected a whole number of GB from 10 to 10240 (Hetzner's volume sizes)"
      "nodes.db.volumes.c.mountpoint: \"/\" is not allowed; expected a normalised absolute path such as \"/var/lib/postgresql\" ('/'-separated components of letters, digits, '.', '_', '-', not starting with '.' or '-'; no trailing '/'; at most 255 characters), below /var/lib, /srv, /data, /mnt (or /srv, /data, /mnt themselves), not /nix, /boot, /etc, /run, /proc, /sys, /dev, /tmp, /var/lib/nix-infra, /var/lib/systemd, /var/lib/nixos, /var/lib/private, /var/lib/containers or under them"
      "nodes.db.volumes.d.extra: unknown field; allowed fields are: size, mountpoint, filesystem"
      "nodes.db.volumes.d.size: missing; expected the volume's size in GB (10-10240)"
      "nodes.db.volumes.d.mountpoint: \"/var/lib/../etc\" is not allowed; expected a normalised absolute path such as \"/var/lib/postgresql\" ('/'-separated components of letters, digits, '.', '_', '-', not starting with '.' or '-'; no trailing '/'; at most 255 characters), below /var/lib, /srv, /data, /mnt (or /srv, /data, /mnt themselves), not /nix, /boot, /etc, /run, /proc, /sys, /dev, /tmp, /var/lib/nix-infra, /var/lib/systemd, /var/lib/nixos, /var/lib/private, /var/lib/containers or under them"
      "nodes.db.volumes.Bad_Name.mountpoint: /srv/x is also the mountpoint of nodes.db.volumes.e; each volume needs its own mountpoint"
      "nodes.db.volumes.f.mountpoint: /srv/x/y is inside /srv/x, the mountpoint of nodes.db.volumes.Bad_Name; volumes of one node may not be mounted inside each other"
      "nodes.db.volumes.f.mountpoint: /srv/x/y is inside /srv/x, the mountpoint of nodes.db.volumes.e; volumes of one node may not be mounted inside each other"
    ];
  };
  testAppVolumeNotALabel = {
    expr = spec.shapeErrors (example // { apps.api = example.apps.api // { volume = "../x"; }; });
    expected = [ "apps.api.volume: \"../x\" is not a volume name (a DNS label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)) or null" ];
  };
  testServicesDefaultToTcp = {
    expr = let a = (spec.normalize (example // { apps.db = { group = "services"; port = 5432; publish = 15432; nodes = [ "worker001" ]; }; })).apps.db; in [ a.protocol a.healthCheck.type a.envPrefix ];
    expected = [ "tcp" "tcp" "DB" ];
  };
  testDefaultEnvPrefix = { expr = spec.defaultEnvPrefix "my-app2"; expected = "MY_APP2"; };
  testCollectsAllShapeErrors = {
    expr = builtins.length (spec.shapeErrors (example // { name = "Bad"; nodes.ctrl001 = { type = "nope"; serverType = "cx22"; }; }));
    expected = 2;
  };
  testNativeAppUnit = {
    expr = (spec.normalize (example // { apps.db = { group = "services"; port = 5432; publish = 15432; nodes = [ "worker001" ]; }; })).apps.db.unit;
    expected = "db.service";
  };
  testExplicitAppUnit = {
    expr = (spec.normalize (example // { apps.db = { group = "services"; port = 5432; publish = 15432; nodes = [ "worker001" ]; unit = "postgresql.service"; }; })).apps.db.unit;
    expected = "postgresql.service";
  };
}
