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
            [ "apps.${a.name}.nodes: node ${builtins.toJSON n} does not exist; nodes are: ${showList nodeNames}" ]
          else if !(builtins.elem s.nodes.${n}.type c.appHostTypes) then
            [ "apps.${a.name}.nodes: ${n} is a ${s.nodes.${n}.type} node, which hosts no apps; apps run on ${showList c.appHostTypes} nodes" ]
          else
            [ ]
        ) a.nodes
      ) apps;

      # publish ports are cluster-wide: consumers reach every app at 127.0.0.1:<publish>
      byPublish = builtins.groupBy (a: toString a.publish) apps;
      publishErrors =
        map (p: let g = byPublish.${p}; in "apps.${(builtins.head g).name}.publish: port ${p} is published by ${showList (map (a: "apps.${a.name}") g)}; publish ports are cluster-wide (consumers reach every app at 127.0.0.1:<publish>), give each app its own") (check.duplicateKeys byPublish)
        ++ builtins.concatMap (a: if builtins.elem a.publish c.reservedPorts then [ "apps.${a.name}.publish: port ${toString a.publish} is reserved by the platform (${showList (map toString c.reservedPorts)})" ] else [ ]) apps;

      portErrors =
        builtins.concatMap (a: if builtins.elem a.port c.reservedPorts then [ "apps.${a.name}.port: port ${toString a.port} is reserved by the platform (${showList (map toString c.reservedPorts)})" ] else [ ]) apps
        ++ builtins.concatMap (
          n:
          let byPort = builtins.groupBy (a: toString a.port) hosted.${n}; in
          map (p: let g = byPort.${p}; in "apps.${(builtins.head g).name}.port: port ${p} is used by ${showList (map (a: "apps.${a.name}") g)}, all placed on node ${n}; apps on one node need distinct ports") (check.duplicateKeys byPort)
        ) (builtins.attrNames hosted);

      addressErrors =
        builtins.concatMap (n: if addrs.${n}.ip == null then [ addrs.${n}.error ] else [ ]) nodeNames
        ++ (
          let
            byIp = builtins.groupBy (n: addrs.${n}.ip) (builtins.filter (n: addrs.${n}.ip != null) nodeNames);
            describe = n: if addrs.${n}.how == "explicit" then "nodes.${n}.privateIp" else "nodes.${n} (derived from its ${if addrs.${n}.how == "numbered" then "type and number" else "name's hash"})";
          in
          map (a: let g = byIp.${a}; in "nodes.${builtins.head g}.privateIp: address ${a} is taken by ${showList (map describe g)}; give all but one of them another nodes.<name>.privateIp") (check.duplicateKeys byIp)
        );
    in
    zoneErrors ++ adminErrors ++ overlayErrors ++ ctrlErrors ++ placementErrors ++ publishErrors ++ portErrors ++ addressErrors;
}
