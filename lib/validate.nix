# Cross-field rules of a cluster spec. Runs on a normalized spec whose shape
# is already valid (spec.nix) and returns every problem at once, each message
# starting with the field path.
let
  c = import ./constants.nix;
  check = import ./check.nix;
  inherit (check) showList;
in
{
  /**
    Every semantic error of a normalized spec.

    Takes the normalized spec `s`, the address assignment (addresses.assign)
    and the apps per node (placement.appsByNode); returns a list of messages.

    Example: semanticErrors s addrs hosted
      => [ "nodes: 2 ctrl nodes (ctrl001, ctrl002); etcd needs an odd number ..." ]
  */
  semanticErrors =
    s: addrs: hosted:
    let
      nodeNames = builtins.attrNames s.nodes;
      apps = builtins.attrValues s.apps;
      ctrls = builtins.filter (n: s.nodes.${n}.type == "ctrl") nodeNames;
      nCtrl = builtins.length ctrls;

      zone = s.provider.networkZone;
      zoneErrors =
        (if c.locationZones.${s.provider.location} == zone then [ ] else [ "provider.location: ${s.provider.location} is in network zone ${c.locationZones.${s.provider.location}}, but provider.networkZone is ${zone}" ])
        ++ builtins.concatMap (
          n:
          let loc = s.nodes.${n}.location; in
          if c.locationZones.${loc} == zone then [ ] else [ "nodes.${n}.location: ${loc} is in network zone ${c.locationZones.${loc}}, but the private network is in ${zone}; allowed here: ${showList (builtins.filter (l: c.locationZones.${l} == zone) (builtins.attrNames c.locationZones))}" ]
        ) nodeNames;

      adminErrors =
        if s.provider.type == "hetzner" && s.provider.adminCidrs == [ ] then
          [ "provider.adminCidrs: is empty; SSH is only opened to these networks, so list at least one (e.g. your office range, or \"0.0.0.0/0\" to allow all deliberately)" ]
        else
          [ ];

      overlayErrors =
        let
          ip = import ./ip.nix;
          a = ip.parseCidr s.provider.network;
          b = ip.parseCidr c.overlay.network;
        in
        if a.base <= b.last && b.base <= a.last then
          [ "provider.network: ${s.provider.network} overlaps the overlay network ${c.overlay.network} (flannel's container addresses); choose another private range, e.g. \"10.10.0.0/16\"" ]
        else
          [ ];

      ctrlErrors =
        if nCtrl == 0 then
          [ "nodes: no node has type \"ctrl\"; the control plane (etcd) needs 1, 3 or 5 ctrl nodes" ]
        else if builtins.bitAnd nCtrl 1 == 0 then
          [ "nodes: ${toString nCtrl} ctrl nodes (${showList ctrls}); etcd needs an odd number (1, 3 or 5) to keep a quorum" ]
        else
          [ ];

      placementErrors = builtins.concatMap (
        a:
        builtins.concatMap (
          n:
          if !(s.nodes ? ${n}) then
            [ "apps.${a.name}.nodes: node ${check.show n} does not exist; nodes are: ${showList nodeNames}" ]
          else if !(builtins.elem s.nodes.${n}.type c.appHostTypes) then
            [ "apps.${a.name}.nodes: ${n} is a ${s.nodes.${n}.type} node, which hosts no apps; apps run on ${showList c.appHostTypes} nodes" ]
          else
            [ ]
        ) a.nodes
      ) apps;

      # An app's data lives on a volume of its one node.
      volumeErrors = builtins.concatMap (
        a:
        let
          n = builtins.head a.nodes;
          vols = builtins.attrNames s.nodes.${n}.volumes;
        in
        if a.volume == null then
          [ ]
        else if builtins.length a.nodes != 1 then
          [ "apps.${a.name}.volume: an app with a volume is placed on exactly one node, but apps.${a.name}.nodes lists ${toString (builtins.length a.nodes)} (${showList a.nodes})" ]
        else if !(s.nodes ? ${n}) then
          [ ] # placementErrors names the missing node
        else if !(builtins.elem a.volume vols) then
          [ "apps.${a.name}.volume: node ${n} has no volume ${check.show a.volume}; declare nodes.${n}.volumes.${a.volume} (its volumes: ${if vols == [ ] then "none" else showList vols})" ]
        else
          [ ]
      ) apps;

      # publish ports are cluster-wide: consumers reach every app at 127.0.0.1:<publish>
      byPublish = builtins.groupBy (a: toString a.publish) apps;
      portName = builtins.listToAttrs (map (k: { name = toString c.ports.${k}; value = k; }) (builtins.attrNames c.ports));
      reservedErr = a: field:
        let p = a.${field}; in
        if builtins.elem p c.reservedPorts then
          [ "apps.${a.name}.${field}: port ${toString p} is the platform's (${c.portUsers.${portName.${toString p}}}); an app may not listen on or publish any of the platform's ports ${showList (map toString c.reservedPorts)}" ]
        else
          [ ];
      publishErrors =
        map (p: let g = byPublish.${p}; in "apps.${(builtins.head g).name}.publish: port ${p} is published by ${showList (map (a: "apps.${a.name}") g)}; publish ports are cluster-wide (consumers reach every app at 127.0.0.1:<publish>), give each app its own") (check.duplicateKeys byPublish)
        ++ builtins.concatMap (a: reservedErr a "publish") apps;

      # Listeners on one node: the ports of the apps placed there, and the
      # mesh proxy's 127.0.0.1:<publish> of every app the node consumes (the
      # platform's own ports are refused for apps anywhere, above). Checked
      # per placement against the publish index, so the cost stays linear.
      # an app's unit, also the default one (<app>.service, podman-<app>.service): never a
      # unit the platform or the system runs (its credentials would be loaded there, a
      # rotation would restart it: an app named sshd could lock a node out), and one unit
      # per app on a node
      unitErrors =
        builtins.concatMap (
          a:
          if builtins.elem a.unit c.platformUnits || builtins.match "(systemd-|dbus|user@|getty@|serial-getty@|emergency|rescue|nix-infra).*" a.unit != null then
            [ "apps.${a.name}.unit: ${a.unit} (as set, or the default of an app of this name) is a unit the platform or the system runs itself; set the app's own unit, or rename the app" ]
          else
            [ ]
        ) apps
        ++ builtins.concatMap (
          n:
          let byUnit = builtins.groupBy (a: a.unit) hosted.${n}; in
          map (u: "apps.${(builtins.head byUnit.${u}).name}.unit: ${u} would run ${showList (map (a: "apps.${a.name}") byUnit.${u})}, all placed on node ${n}; each app needs its own unit") (check.duplicateKeys byUnit)
        ) (builtins.attrNames hosted);

      # secret names are file names (secrets/<name>.age, <name>.cred): names that differ only
      # in case would be one file on a case-insensitive file system
      secretCaseErrors =
        let
          names = check.uniqueSorted (builtins.concatMap (a: a.secrets) apps);
          byLower = builtins.groupBy check.toLower names;
        in
        map (k: "apps: the secret names ${showList byLower.${k}} differ only in case; secret names must differ in more than case") (check.duplicateKeys byLower);

      portErrors =
        builtins.concatMap (a: reservedErr a "port") apps
        ++ builtins.concatMap (
          n:
          let byPort = builtins.groupBy (a: toString a.port) hosted.${n}; in
          map (p: let g = byPort.${p}; in "apps.${(builtins.head g).name}.port: port ${p} is used by ${showList (map (a: "apps.${a.name}") g)}, all placed on node ${n}; apps on one node need distinct ports") (check.duplicateKeys byPort)
        ) (builtins.attrNames hosted)
        ++ (
          let
            clashes = builtins.concatMap (
              a:
              builtins.concatMap (
                n:
                map (b: { inherit a b n; }) (
                  builtins.filter (b: s.nodes ? ${n} && builtins.elem b.group s.nodes.${n}.consumes) (byPublish.${toString a.port} or [ ])
                )
              ) a.nodes
            ) apps;
            byPair = builtins.groupBy (x: "${x.a.name} ${x.b.name}") clashes;
          in
          map (
            k:
            let
              g = byPair.${k};
              x = builtins.head g;
            in
            "apps.${x.a.name}.port: port ${toString x.a.port} clashes on node${if builtins.length g > 1 then "s" else ""} ${showList (map (y: y.n) g)} with apps.${x.b.name}.publish (the mesh proxy listens on 127.0.0.1:${toString x.b.publish} on every node that consumes ${x.b.group}); give apps.${x.a.name}.port or apps.${x.b.name}.publish another port"
          ) (builtins.attrNames byPair)
        );

      addressErrors =
        builtins.concatMap (n: if addrs.${n}.ip == null then [ addrs.${n}.error ] else [ ]) nodeNames
        ++ (
          let
            byIp = builtins.groupBy (n: addrs.${n}.ip) (builtins.filter (n: addrs.${n}.ip != null) nodeNames);
            describe = n: if addrs.${n}.how == "explicit" then "nodes.${n}.privateIp" else "nodes.${n} (derived from its ${if addrs.${n}.how == "numbered" then "type and number" else "name's hash"})";
          in
          map (a: let g = byIp.${a}; in "nodes.${builtins.head g}.privateIp: address ${a} is taken by ${showList (map describe g)}; give all but one of them another nodes.<name>.privateIp") (check.duplicateKeys byIp)
        );
      # Consumers get <PREFIX>_HOST/_PORT/_PROTOCOL/_PATH for every app they
      # consume: two apps with one prefix would overwrite each other, and a
      # prefix must not produce a variable a loader, shell or runtime reads.
      byPrefix = builtins.groupBy (a: a.envPrefix) apps;
      envErrors =
        map (
          p:
          let g = byPrefix.${p}; in
          "apps.${(builtins.head g).name}.envPrefix: ${p} is the prefix of ${showList (map (a: "apps.${a.name}") g)} (set or derived from the app name); a consumer of both would get one ${p}_HOST, ${p}_PORT, ... for two apps, give each app its own envPrefix"
        ) (check.duplicateKeys byPrefix)
        ++ builtins.concatMap (
          a:
          let denied = builtins.filter check.isDeniedEnvName (map (x: "${a.envPrefix}_${x}") c.envSuffixes); in
          if denied == [ ] then
            [ ]
          else
            [ "apps.${a.name}.envPrefix: ${a.envPrefix} (set or derived from the app name) would give consumers ${showList denied}, which loaders, shells or language runtimes read; choose another envPrefix (denied: the names and prefixes listed in docs/cluster-spec.md)" ]
        ) apps;

      # What Hetzner is given: server <cluster>-<node> (a hostname), network
      # <cluster>, firewalls <cluster>-<type>, SSH keys <cluster>-<12 hex>,
      # placement groups <cluster>-spread-<n>: each at most 63 characters.
      nameMax = c.hetzner.nameMax;
      clusterNameMax = nameMax - builtins.stringLength "-spread-99999";
      hetznerErrors =
        if s.provider.type != "hetzner" then
          [ ]
        else
          (
            if builtins.stringLength s.name > clusterNameMax then
              [ "name: ${builtins.toJSON s.name} is ${toString (builtins.stringLength s.name)} characters; Hetzner resource names are derived from it (\"${s.name}-spread-1\", SSH keys \"${s.name}-<12 hex>\") and may have at most ${toString nameMax}, so the cluster name may have at most ${toString clusterNameMax}" ]
            else
              [ ]
          )
          ++ builtins.concatMap (
            n:
            let server = "${s.name}-${n}"; in
            if builtins.stringLength server > nameMax then
              [ "nodes.${n}: its server name \"${server}\" (<cluster>-<node>) is ${toString (builtins.stringLength server)} characters; Hetzner server names are hostnames of at most ${toString nameMax}, shorten the node or the cluster name" ]
            else
              [ ]
          ) nodeNames
          ++ builtins.concatMap (
            n:
            builtins.concatMap (
              v:
              let volume = "${s.name}-${n}-${v}"; in
              if builtins.stringLength volume > nameMax then
                [ "nodes.${n}.volumes.${v}: its Hetzner volume name \"${volume}\" (<cluster>-<node>-<volume>) is ${toString (builtins.stringLength volume)} characters; Hetzner allows at most ${toString nameMax}, shorten the volume, node or cluster name" ]
              else
                [ ]
            ) (builtins.attrNames s.nodes.${n}.volumes)
          ) nodeNames;
    in
    zoneErrors ++ hetznerErrors ++ envErrors ++ adminErrors ++ overlayErrors ++ ctrlErrors ++ placementErrors ++ volumeErrors ++ publishErrors ++ portErrors ++ unitErrors ++ secretCaseErrors ++ addressErrors;
}
