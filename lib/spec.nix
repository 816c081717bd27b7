# The cluster spec: shape validation and defaults.
#
# `shapeErrors` checks every field on its own (type, enum, syntax) and returns
# all problems at once; `normalize` fills defaults and may assume a spec with
# no shape errors. Cross-field rules (placement, port and address clashes)
# live in validate.nix.
let
  c = import ./constants.nix;
  check = import ./check.nix;
  ip = import ./ip.nix;
  inherit (check) show showList;

  topFields = [ "name" "provider" "nodes" "apps" ];
  providerFields = [ "type" "location" "networkZone" "network" "image" "sshKeys" "adminCidrs" ];
  nodeFields = [ "type" "serverType" "location" "image" "privateIp" "labels" "consumes" "volumes" ];
  volumeFields = [ "size" "mountpoint" "filesystem" ];
  appFields = [
    "group" "port" "publish" "nodes" "envPrefix" "image" "unit" "secrets" "protocol" "path" "healthCheck" "volume"
  ];
  healthCheckFields = [ "type" "path" "command" "intervalSeconds" "timeoutSeconds" ];
  healthCheckTypes = [ "http" "tcp" "command" ];
  protocols = [ "http" "tcp" ];
  locations = builtins.attrNames c.locationZones;
  zones = check.uniqueSorted (builtins.attrValues c.locationZones);

  # Error list for an optional field: [] when absent, else `errs value`.
  opt = attrs: field: errs: if attrs ? ${field} then errs attrs.${field} else [ ];
  req = path: attrs: field: what: errs:
    if attrs ? ${field} then errs attrs.${field} else [ "${path}.${field}: missing; expected ${what}" ];
  enumErr = path: allowed: v:
    if builtins.elem v allowed then [ ] else [ "${path}: ${show v} is not allowed; expected one of: ${showList allowed}" ];
  stringListErr = path: what: ok: v:
    if !(builtins.isList v) then
      [ "${path}: expected a list of ${what}, got ${show v}" ]
    else
      builtins.concatLists (
        builtins.genList (
          i:
          let x = builtins.elemAt v i; in
          if ok x then [ ] else [ "${path}[${toString i}]: ${show x} is not ${what}" ]
        ) (builtins.length v)
      );
  uniqueListErr = path: v:
    let dups = check.duplicateKeys (builtins.groupBy (x: x) v); in
    if dups == [ ] then [ ] else [ "${path}: lists ${showList dups} more than once" ];
  portErr = path: v:
    if check.isPort v then [ ] else [ "${path}: ${show v} is not a port; expected an integer from 1 to 65535" ];
  secondsErr = path: v:
    if builtins.isInt v && v >= 1 && v <= 3600 then [ ] else [ "${path}: ${show v} is not allowed; expected whole seconds from 1 to 3600" ];
  attrsErr = path: v: if builtins.isAttrs v then [ ] else [ "${path}: expected an attribute set, got ${show v}" ];
  urlPathErr = path: v:
    if check.isUrlPath v then
      [ ]
    else
      [ "${path}: ${show v} is not a URL path: '/' then at most 1024 characters of RFC 3986 path and query (letters, digits, -._~!$&'()*+,;=:@/? and %XX escapes; no spaces, quotes or '#'), not starting with '//'" ];
  imageErr = path: v:
    if check.isHetznerName v then [ ] else [ "${path}: ${show v} is not an image name such as \"debian-12\" (1-63 of a-z, 0-9, '.', '_', '-', starting alphanumeric)" ];
  reservedErr = path: what: v:
    if check.isReservedName v then [ "${path}: the ${what} ${show v} starts with ${c.reservedNamePrefix}-, which is reserved for the platform's own names" ] else [ ];

  providerErrors =
    p:
    let
      path = "provider";
    in
    if !(builtins.isAttrs p) then
      attrsErr path p
    else
      check.unknownFields path providerFields p
      ++ opt p "type" (enumErr "${path}.type" c.providerTypes)
      ++ req path p "location" "a Hetzner location (${showList locations})" (enumErr "${path}.location" locations)
      ++ opt p "networkZone" (enumErr "${path}.networkZone" zones)
      ++ opt p "network" (
        v:
        let n = ip.parseCidr v; in
        if n == null then
          [ "${path}.network: ${show v} is not an IPv4 network in CIDR form with no host bits set, e.g. \"10.10.0.0/16\"" ]
        else if !(ip.isPrivateCidr v) then
          [ "${path}.network: ${v} is not inside a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)" ]
        else if n.prefixLength > 24 then
          [ "${path}.network: ${v} is too small; the prefix length must be 24 or less (e.g. /16)" ]
        else
          [ ]
      )
      ++ opt p "image" (imageErr "${path}.image")
      ++ req path p "sshKeys" "a non-empty list of OpenSSH public keys" (
        v:
        stringListErr "${path}.sshKeys" "an OpenSSH public key (\"ssh-ed25519 AAAA... comment\")" check.isSshPublicKey v
        ++ (if v == [ ] then [ "${path}.sshKeys: is empty; at least one operator key is needed to reach the nodes" ] else [ ])
      )
      ++ opt p "adminCidrs" (
        v:
        stringListErr "${path}.adminCidrs" "an IPv4 or IPv6 network in CIDR form with no host bits set, such as \"203.0.113.0/24\" or \"2001:db8::/32\"" check.isAnyCidr v
      );

  dnsLabelRule = "a DNS label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)";

  # One volume of a node: nodes.<n>.volumes.<vol> = { size; mountpoint; filesystem; }.
  volumeErrors =
    nodePath: name: v:
    let
      path = "${nodePath}.volumes.${check.pathSegment name}";
      h = c.hetzner;
    in
    (if check.isDnsLabel name then [ ] else [ "${path}: the volume name ${show name} is not ${dnsLabelRule}" ])
    ++ (
      if !(builtins.isAttrs v) then
        attrsErr path v
      else
        check.unknownFields path volumeFields v
        ++ req path v "size" "the volume's size in GB (${toString h.volumeSizeMin}-${toString h.volumeSizeMax})" (
          x:
          if builtins.isInt x && x >= h.volumeSizeMin && x <= h.volumeSizeMax then
            [ ]
          else
            [ "${path}.size: ${show x} is not allowed; expected a whole number of GB from ${toString h.volumeSizeMin} to ${toString h.volumeSizeMax} (Hetzner's volume sizes)" ]
        )
        ++ req path v "mountpoint" "an absolute path such as \"/var/lib/postgresql\"" (
          x:
          if check.isMountpoint x then
            [ ]
          else
            [ "${path}.mountpoint: ${show x} is not allowed; expected a normalised absolute path such as \"/var/lib/postgresql\" ('/'-separated components of letters, digits, '.', '_', '-', not starting with '.' or '-'; no trailing '/'; at most 255 characters), below ${showList c.mountRoots} (or /srv, /data, /mnt themselves), not ${showList c.forbiddenMountRoots} or under them" ]
        )
        ++ opt v "filesystem" (enumErr "${path}.filesystem" c.volumeFilesystems)
    );

  # Mountpoints of one node's volumes: each its own, none inside another.
  mountpointErrors =
    nodePath: vols:
    let
      named = builtins.filter (k: builtins.isAttrs vols.${k} && check.isMountpoint (vols.${k}.mountpoint or null)) (builtins.attrNames vols);
      mp = k: vols.${k}.mountpoint;
      inside = a: b: builtins.substring 0 (builtins.stringLength (mp b) + 1) (mp a) == "${mp b}/";
    in
    builtins.concatMap (
      a:
      builtins.concatMap (
        b:
        if a < b && mp a == mp b then
          [ "${nodePath}.volumes.${check.pathSegment a}.mountpoint: ${mp a} is also the mountpoint of ${nodePath}.volumes.${check.pathSegment b}; each volume needs its own mountpoint" ]
        else if a != b && inside a b then
          [ "${nodePath}.volumes.${check.pathSegment a}.mountpoint: ${mp a} is inside ${mp b}, the mountpoint of ${nodePath}.volumes.${check.pathSegment b}; volumes of one node may not be mounted inside each other" ]
        else
          [ ]
      ) named
    ) named;

  nodeErrors =
    providerType: name: n:
    let
      path = "nodes.${check.pathSegment name}";
    in
    (if check.isDnsLabel name then [ ] else [ "${path}: the node name ${show name} is not a DNS label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)" ])
    ++ reservedErr path "node name" name
    ++ (
      if !(builtins.isAttrs n) then
        attrsErr path n
      else
        check.unknownFields path nodeFields n
        ++ req path n "type" "one of: ${showList c.nodeTypes}" (enumErr "${path}.type" c.nodeTypes)
        ++ (
          if providerType == "hetzner" then
            req path n "serverType" "a Hetzner server type such as \"cx22\"" (
              v: if check.isHetznerName v then [ ] else [ "${path}.serverType: ${show v} is not a server type name such as \"cx22\" (1-63 of a-z, 0-9, '.', '_', '-', starting alphanumeric)" ]
            )
          else
            opt n "serverType" (v: if check.isHetznerName v then [ ] else [ "${path}.serverType: ${show v} is not a server type name such as \"cx22\" (1-63 of a-z, 0-9, '.', '_', '-', starting alphanumeric)" ])
        )
        ++ opt n "location" (enumErr "${path}.location" locations)
        ++ opt n "image" (imageErr "${path}.image")
        ++ opt n "privateIp" (v: if v == null || ip.parseIPv4 v != null then [ ] else [ "${path}.privateIp: ${show v} is not an IPv4 address" ])
        ++ opt n "labels" (
          v:
          if !(builtins.isAttrs v) then
            attrsErr "${path}.labels" v
          else
            builtins.concatMap (
              k:
              (if check.isLabelKey k then [ ] else [ "${path}.labels: key ${show k} is not a valid label key (a name of at most 63 alphanumerics, '-', '_', '.', beginning and ending alphanumeric, optionally after a DNS-subdomain prefix of at most 253 characters and '/')" ])
              ++ (if check.isReservedName k then [ "${path}.labels.${check.show k}: keys starting with ${c.labelPrefix} (or ${c.reservedNamePrefix}-) are reserved for labels nix-infra sets itself" ] else [ ])
              ++ (if check.isLabelValue v.${k} then [ ] else [ "${path}.labels.${check.show k}: ${show v.${k}} is not a valid label value (empty, or at most 63 alphanumerics, '-', '_', '.', beginning and ending alphanumeric)" ])
            ) (builtins.attrNames v)
        )
        ++ opt n "consumes" (v: stringListErr "${path}.consumes" "a group (${showList c.groups})" (x: builtins.elem x c.groups) v ++ (if builtins.isList v then uniqueListErr "${path}.consumes" v else [ ]))
        ++ opt n "volumes" (
          v:
          if !(builtins.isAttrs v) then
            attrsErr "${path}.volumes" v
          else
            builtins.concatLists (builtins.attrValues (builtins.mapAttrs (volumeErrors path) v)) ++ mountpointErrors path v
        )
    );

  healthCheckErrors =
    # defaultType: the type the check gets when `type` is not set (from the app's protocol)
    defaultType: path: h:
    let
      type = h.type or defaultType;
      interval = h.intervalSeconds or 10;
      timeout = h.timeoutSeconds or 5;
    in
    if !(builtins.isAttrs h) then
      attrsErr path h
    else
      check.unknownFields path healthCheckFields h
      ++ (if h ? path && type != "http" then [ "${path}.path: only a health check of type \"http\" has a path (this one is ${show type})" ] else [ ])
      ++ (if h ? command && type != "command" then [ "${path}.command: only a health check of type \"command\" has a command (this one is ${show type})" ] else [ ])
      # the lease TTL is three intervals and at most an hour; a check must end before the next one
      ++ (if builtins.isInt interval && interval > 1200 then [ "${path}.intervalSeconds: ${toString interval} is too long; at most 1200 (the registration lease lives three intervals, at most 3600 s)" ] else [ ])
      ++ (if builtins.isInt interval && builtins.isInt timeout && timeout > interval then [ "${path}.timeoutSeconds: ${toString timeout} is longer than intervalSeconds (${toString interval}); a check must end before the next one starts" ] else [ ])
      ++ opt h "type" (enumErr "${path}.type" healthCheckTypes)
      ++ opt h "path" (urlPathErr "${path}.path")
      ++ opt h "command" (
        v:
        if
          builtins.isString v
          && builtins.stringLength v <= 4096
          && builtins.match "[^[:cntrl:]]*" (builtins.replaceStrings [ "\n" "\t" ] [ "" "" ] v) != null
          && builtins.match "[[:space:]]*" v == null
        then
          [ ]
        else
          [ "${path}.command: ${show v} is not a shell command (1-4096 characters, not only blanks, no control characters but newline and tab)" ]
      )
      ++ (if (h.type or null) == "command" && !(h ? command) then [ "${path}.command: missing; a health check of type \"command\" needs a command" ] else [ ])
      ++ opt h "intervalSeconds" (secondsErr "${path}.intervalSeconds")
      ++ opt h "timeoutSeconds" (secondsErr "${path}.timeoutSeconds");

  appErrors =
    name: a:
    let
      path = "apps.${check.pathSegment name}";
    in
    (if check.isDnsLabel name then [ ] else [ "${path}: the app name ${show name} is not a DNS label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)" ])
    ++ reservedErr path "app name" name
    ++ (
      if !(builtins.isAttrs a) then
        attrsErr path a
      else
        check.unknownFields path appFields a
        ++ req path a "group" "one of: ${showList c.groups}" (enumErr "${path}.group" c.groups)
        ++ req path a "port" "the port the app listens on (1-65535)" (portErr "${path}.port")
        ++ req path a "publish" "the port consumers reach it on at 127.0.0.1 (1-65535)" (portErr "${path}.publish")
        ++ req path a "nodes" "a non-empty list of node names" (
          v:
          stringListErr "${path}.nodes" "a node name" builtins.isString v
          ++ (if v == [ ] then [ "${path}.nodes: is empty; place the app on at least one worker or service node" ] else [ ])
          ++ (if builtins.isList v then uniqueListErr "${path}.nodes" v else [ ])
        )
        ++ opt a "envPrefix" (
          v:
          if !(builtins.isString v && builtins.match "[A-Z][A-Z0-9_]{0,63}" v != null) then
            [ "${path}.envPrefix: ${show v} is not an environment prefix (1-64 of uppercase letters, digits and '_', starting with a letter)" ]
          else if builtins.substring 0 9 v == "NIX_INFRA" then
            [ "${path}.envPrefix: ${show v} starts with NIX_INFRA, which is reserved for the platform's own variables" ]
          else
            [ ]
        )
        ++ opt a "image" (
          v:
          if v == null || check.isOciReference v then
            [ ]
          else
            [ "${path}.image: ${show v} is not an OCI image reference ([registry[:port]/]path[:tag][@sha256:digest], e.g. \"ghcr.io/acme/api:1.4\"; lowercase path, name at most 255 characters) or null" ]
        )
        ++ opt a "unit" (
          v:
          if !(check.isUnitName v) then
            [ "${path}.unit: ${show v} is not a systemd service name (at most 255 of letters, digits, ':', '_', '.', '-', not starting with '-' or '.', an optional '@instance', ending in \".service\"; e.g. \"postgresql.service\")" ]
          else if builtins.elem v c.platformUnits || builtins.match "(systemd-|dbus|user@|getty@|serial-getty@).*" v != null then
            [ "${path}.unit: ${show v} is a unit the platform or the system runs itself; name the app's own unit" ]
          else
            reservedErr "${path}.unit" "unit name" v
        )
        ++ opt a "secrets" (
          v:
          stringListErr "${path}.secrets" "a safe secret name (letters, digits, '.', '_', '-'; at most 64; not starting with '.' or '-')" check.isSafeFileName v
          ++ (if builtins.isList v then uniqueListErr "${path}.secrets" v else [ ])
          ++ (
            if builtins.isList v then
              builtins.concatLists (builtins.genList (i: reservedErr "${path}.secrets[${toString i}]" "secret name" (builtins.elemAt v i)) (builtins.length v))
            else
              [ ]
          )
        )
        ++ opt a "protocol" (enumErr "${path}.protocol" protocols)
        ++ opt a "path" (urlPathErr "${path}.path")
        ++ opt a "healthCheck" (
          healthCheckErrors (if (a.protocol or (if (a.group or null) == "services" then "tcp" else "http")) == "http" then "http" else "tcp") "${path}.healthCheck"
        )
        ++ opt a "volume" (
          v: if v == null || check.isDnsLabel v then [ ] else [ "${path}.volume: ${show v} is not a volume name (${dnsLabelRule}) or null" ]
        )
    );

  defaultEnvPrefix = name: builtins.replaceStrings (builtins.genList (i: builtins.substring i 1 "abcdefghijklmnopqrstuvwxyz-") 27) (builtins.genList (i: builtins.substring i 1 "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") 27) name;
in
{
  /**
    Every shape error of a raw cluster spec, as a list of messages that each
    start with the field path ("nodes.web.type: ...").

    Takes the spec as written by the user; returns [] when every field has the
    right type and syntax. Cross-field rules are in validate.nix.

    Example: shapeErrors { name = "Demo"; ... }
      => [ "name: \"Demo\" is not a DNS label ..." ]
  */
  shapeErrors =
    spec:
    if !(builtins.isAttrs spec) then
      [ "spec: expected an attribute set with name, provider, nodes and apps, got ${show spec}" ]
    else
      let
        providerType = spec.provider.type or "hetzner";
      in
      check.unknownFields "spec" topFields spec
      ++ req "spec" spec "name" "the cluster name, a DNS label" (
        v:
        if !(check.isDnsLabel v) then
          [ "name: ${show v} is not a DNS label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)" ]
        else
          reservedErr "name" "cluster name" v
      )
      ++ req "spec" spec "provider" "an attribute set with location, sshKeys, ..." providerErrors
      ++ req "spec" spec "nodes" "an attribute set of nodes" (
        v:
        if !(builtins.isAttrs v) then
          attrsErr "nodes" v
        else if v == { } then
          [ "nodes: is empty; a cluster needs at least one ctrl node" ]
        else
          builtins.concatLists (builtins.attrValues (builtins.mapAttrs (nodeErrors providerType) v))
      )
      ++ opt spec "apps" (
        v: if !(builtins.isAttrs v) then attrsErr "apps" v else builtins.concatLists (builtins.attrValues (builtins.mapAttrs appErrors v))
      );

  /**
    Fill every default of a spec that has no shape errors.

    Returns { name; provider; nodes; apps; } where every node and app carries
    all of its fields (see docs/cluster-spec.md for the defaults).

    Example: (normalize spec).apps.api.protocol => "http" (group backends)
  */
  normalize =
    spec:
    let
      p = spec.provider;
      provider = {
        type = p.type or "hetzner";
        inherit (p) location sshKeys;
        networkZone = p.networkZone or c.locationZones.${p.location};
        network = p.network or "10.10.0.0/16";
        image = p.image or "debian-12";
        adminCidrs = p.adminCidrs or [ ];
      };
    in
    {
      inherit (spec) name;
      inherit provider;
      nodes = builtins.mapAttrs (name: n: {
        inherit name;
        inherit (n) type;
        serverType = n.serverType or null;
        location = n.location or provider.location;
        image = n.image or provider.image;
        privateIp = n.privateIp or null;
        labels = n.labels or { };
        consumes = n.consumes or c.defaultConsumes.${n.type};
        volumes = builtins.mapAttrs (_: v: {
          inherit (v) size mountpoint;
          filesystem = v.filesystem or (builtins.head c.volumeFilesystems);
        }) (n.volumes or { });
      }) spec.nodes;
      apps = builtins.mapAttrs (
        name: a:
        let
          protocol = a.protocol or (if a.group == "services" then "tcp" else "http");
          path = a.path or "/";
          h = a.healthCheck or { };
          hType = h.type or (if protocol == "http" then "http" else "tcp");
        in
        {
          inherit name protocol path;
          inherit (a) group port publish nodes;
          envPrefix = a.envPrefix or (defaultEnvPrefix name);
          image = a.image or null;
          # the unit that runs the app: its container's, unless a native service is named
          unit = a.unit or (if (a.image or null) != null then "podman-${name}.service" else "${name}.service");
          secrets = a.secrets or [ ];
          volume = a.volume or null;
          healthCheck = {
            type = hType;
            path = if hType == "http" then h.path or path else null;
            command = if hType == "command" then h.command else null;
            intervalSeconds = h.intervalSeconds or 10;
            timeoutSeconds = h.timeoutSeconds or 5;
          };
        }
      ) (spec.apps or { });
    };

  inherit defaultEnvPrefix;
}
