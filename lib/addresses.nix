# Private IPv4 addresses of nodes.
#
# An address is a pure function of the node's own name, type and the
# network, never of the other nodes, so adding or removing a node or an app
# cannot move anybody else. The network is cut into 8 equal blocks (see
# constants.addressBlocks): a node whose name ends in a number N ("worker017")
# gets offset N in its type's block; a node without a number is placed by a
# hash of its name in the last two blocks. Block 0 keeps the network address
# and Hetzner's gateway (the first host) out of reach, and the hashed range
# stops before the broadcast address. Two nodes deriving the same address is
# an error that names both (validate.nix); `privateIp` overrides.
let
  c = import ./constants.nix;
  ip = import ./ip.nix;

  hexDigit = {
    "0" = 0; "1" = 1; "2" = 2; "3" = 3; "4" = 4; "5" = 5; "6" = 6; "7" = 7;
    "8" = 8; "9" = 9; "a" = 10; "b" = 11; "c" = 12; "d" = 13; "e" = 14; "f" = 15;
  };
  hexToInt = s: builtins.foldl' (acc: i: acc * 16 + hexDigit.${builtins.substring i 1 s}) 0 (builtins.genList (i: i) (builtins.stringLength s));
in
rec {
  /**
    The trailing number of a node name, or null when it has none (or only
    zeros, or more than 9 digits, which are reported as too large).

    Example: nodeNumber "worker017" => 17; nodeNumber "db" => null
  */
  nodeNumber =
    name:
    let
      m = builtins.match "(.*[^0-9])?0*([0-9]+)" name;
      digits = if m == null then null else builtins.elemAt m 1;
    in
    if digits == null then
      null
    else if builtins.stringLength digits > 9 then
      1000000000
    else
      let n = builtins.fromJSON digits; in if n == 0 then null else n;

  /**
    The address plan of a network: block size and where each region starts.

    Takes a CIDR string; returns { net; blockSize; hashedStart; hashedSize; }
    with `net` as from ip.parseCidr.

    Example: (plan "10.10.0.0/16").blockSize => 8192
  */
  plan =
    network:
    let
      net = ip.parseCidr network;
      blockSize = net.size / 8;
    in
    {
      inherit net blockSize;
      hashedStart = net.base + c.addressBlocks.hashed * blockSize;
      # two blocks, less the broadcast address at the very end
      hashedSize = 2 * blockSize - 1;
    };

  /**
    Derive a node's address from its name and type alone.

    Takes the address plan, the node name and type; returns
    { ip = "a.b.c.d"; how = "numbered" | "hashed"; } or
    { ip = null; error = "..."; } when its number does not fit the block.

    Example: derive (plan "10.10.0.0/16") "worker001" "worker"
      => { ip = "10.10.64.1"; how = "numbered"; }
  */
  derive =
    p: name: type:
    let
      n = nodeNumber name;
    in
    if n == null then
      {
        ip = ip.formatIPv4 (p.hashedStart + ip.mod (hexToInt (builtins.substring 0 7 (builtins.hashString "sha256" name))) p.hashedSize);
        how = "hashed";
      }
    else if n >= p.blockSize then
      {
        ip = null;
        error = "nodes.${name}: its number ${toString n} does not fit the ${toString (p.blockSize - 1)} addresses the network ${ip.formatIPv4 p.net.base}/${toString p.net.prefixLength} gives each node type; use a larger provider.network or set nodes.${name}.privateIp";
      }
    else
      {
        ip = ip.formatIPv4 (p.net.base + c.addressBlocks.${type} * p.blockSize + n);
        how = "numbered";
      };

  /**
    Why an explicit `privateIp` cannot be used, or null when it can: it must
    lie in the network and be neither the network address, the gateway (first
    host) nor the broadcast address.

    Example: overrideError (plan "10.10.0.0/16") "db" "10.10.0.1"
      => "nodes.db.privateIp: 10.10.0.1 is the gateway of 10.10.0.0/16 ..."
  */
  overrideError =
    p: name: addr:
    let
      a = ip.parseIPv4 addr;
      cidr = "${ip.formatIPv4 p.net.base}/${toString p.net.prefixLength}";
      field = "nodes.${name}.privateIp";
    in
    if !(ip.inCidr p.net a) then
      "${field}: ${addr} is outside provider.network ${cidr}"
    else if a == p.net.base then
      "${field}: ${addr} is the network address of ${cidr}; pick a host address"
    else if a == p.net.base + 1 then
      "${field}: ${addr} is the gateway of ${cidr} (Hetzner reserves the first host); pick another address"
    else if a == p.net.last then
      "${field}: ${addr} is the broadcast address of ${cidr}; pick a host address"
    else
      null;

  /**
    Assign addresses to normalized nodes.

    Takes the network CIDR and the attrset of normalized nodes; returns an
    attrset node name -> { ip; how; error? } where how is "numbered",
    "hashed" or "explicit". Uniqueness is checked by validate.nix.

    Example: (assign "10.10.0.0/16" { ctrl001 = { name = "ctrl001"; type = "ctrl"; privateIp = null; }; }).ctrl001.ip
      => "10.10.32.1"
  */
  assign =
    network: nodes:
    let
      p = plan network;
    in
    builtins.mapAttrs (
      name: n:
      if n.privateIp != null then
        let err = overrideError p name n.privateIp; in
        if err == null then { ip = n.privateIp; how = "explicit"; } else { ip = null; error = err; }
      else
        derive p name n.type
    ) nodes;

  inherit hexToInt;
}
