# IPv4 arithmetic on builtins only: parse, format, CIDR ranges; and IPv6
# parsing (full RFC 4291 text form) for CIDRs such as provider.adminCidrs.
#
# Addresses are handled as integers (Nix ints are 64-bit), so ranges and
# offsets are plain arithmetic. Every parser returns null on bad input so the
# caller (validate.nix) can phrase the error with the field path.
let
  pow2 = n: builtins.foldl' (acc: _: acc * 2) 1 (builtins.genList (x: x) n);

  octetOk = s: builtins.match "(0|[1-9][0-9]{0,2})" s != null && builtins.fromJSON s <= 255;

  hexValue = builtins.listToAttrs (
    builtins.genList (i: { name = builtins.substring i 1 "0123456789abcdef"; value = i; }) 16
    ++ builtins.genList (i: { name = builtins.substring i 1 "ABCDEF"; value = 10 + i; }) 6
  );
  hexGroup = g: builtins.foldl' (acc: i: acc * 16 + hexValue.${builtins.substring i 1 g}) 0 (builtins.genList (i: i) (builtins.stringLength g));
in
rec {
  /**
    Parse a dotted-quad IPv4 address into an integer.

    Takes a string, returns an int, or null when the string is not a valid
    address (leading zeros are rejected, as `ip` does).

    Example: parseIPv4 "10.0.0.1" => 167772161
  */
  parseIPv4 =
    s:
    let
      m = if builtins.isString s then builtins.match "([0-9]+)\\.([0-9]+)\\.([0-9]+)\\.([0-9]+)" s else null;
    in
    if m == null || !(builtins.all octetOk m) then
      null
    else
      builtins.foldl' (acc: o: acc * 256 + builtins.fromJSON o) 0 m;

  /**
    Format an integer as a dotted-quad IPv4 address.

    Takes an int in [0, 2^32), returns a string.

    Example: formatIPv4 167772161 => "10.0.0.1"
  */
  formatIPv4 =
    n:
    let
      o = k: toString (builtins.bitAnd (n / (pow2 (8 * k))) 255);
    in
    "${o 3}.${o 2}.${o 1}.${o 0}";

  /**
    Parse a CIDR "a.b.c.d/len" into { base; prefixLength; size; last; }.

    Returns null when the string is not a CIDR or the address has host bits
    set (so "10.0.0.1/16" is rejected: say "10.0.0.0/16").
    `base` is the network address, `last` the broadcast address, both ints.

    Example: parseCidr "10.10.0.0/16"
      => { base = 168427520; prefixLength = 16; size = 65536; last = 168493055; }
  */
  parseCidr =
    s:
    let
      m = if builtins.isString s then builtins.match "([0-9.]+)/(0|[1-9][0-9]?)" s else null;
      addr = if m == null then null else parseIPv4 (builtins.elemAt m 0);
      len = if m == null then 33 else builtins.fromJSON (builtins.elemAt m 1);
      size = pow2 (32 - len);
    in
    if addr == null || len > 32 || builtins.bitAnd addr (size - 1) != 0 then
      null
    else
      {
        base = addr;
        prefixLength = len;
        inherit size;
        last = addr + size - 1;
      };

  /**
    Whether integer address `a` lies inside a parsed CIDR `net`.

    Example: inCidr (parseCidr "10.0.0.0/8") (parseIPv4 "10.1.2.3") => true
  */
  inCidr = net: a: a >= net.base && a <= net.last;

  /**
    Whether a CIDR string lies inside one of the RFC 1918 private ranges.

    Example: isPrivateCidr "10.10.0.0/16" => true
  */
  isPrivateCidr =
    s:
    let
      n = parseCidr s;
      within = r: let p = parseCidr r; in n.prefixLength >= p.prefixLength && inCidr p n.base;
    in
    n != null && builtins.any within [ "10.0.0.0/8" "172.16.0.0/12" "192.168.0.0/16" ];

  /**
    Integer remainder for non-negative ints (Nix 2.8 has no builtins.mod).

    Example: mod 7 3 => 1
  */
  mod = a: b: a - (a / b) * b;

  inherit pow2;

  /**
    Parse an IPv6 address in any RFC 4291 text form: eight groups of 1-4
    hex digits, at most one `::` standing for one or more zero groups, and
    optionally a dotted IPv4 address as the last 32 bits. No zone index.

    Takes a string; returns the list of its eight 16-bit groups as ints, or
    null when it is not an IPv6 address.

    Example: parseIPv6 "2001:db8::1" => [ 8193 3512 0 0 0 0 0 1 ]
    Example: parseIPv6 ":" => null; parseIPv6 "1::2::3" => null
  */
  parseIPv6 =
    s:
    let
      ok = builtins.isString s && builtins.stringLength s <= 45 && builtins.match "[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*" s != null;
      halves = builtins.filter builtins.isString (builtins.split "::" s);
      nHalves = builtins.length halves;
      # the groups of one side of "::"; `last` says whether a dotted IPv4 may end it
      groups =
        str: last:
        if str == "" then
          [ ]
        else
          let
            parts = builtins.filter builtins.isString (builtins.split ":" str);
            n = builtins.length parts;
            tail = builtins.elemAt parts (n - 1);
            v4 = if last then parseIPv4 tail else null;
            heads = if v4 != null then builtins.genList (i: builtins.elemAt parts i) (n - 1) else parts;
            hexOk = builtins.all (g: builtins.match "[0-9A-Fa-f]{1,4}" g != null) heads;
          in
          if !hexOk then
            null
          else
            map hexGroup heads ++ (if v4 == null then [ ] else [ (v4 / 65536) (builtins.bitAnd v4 65535) ]);
      left = groups (builtins.head halves) (nHalves == 1);
      right = if nHalves == 2 then groups (builtins.elemAt halves 1) true else [ ];
      count = builtins.length left + builtins.length right;
    in
    if !ok || nHalves > 2 || left == null || right == null then
      null
    else if nHalves == 1 then
      (if count == 8 then left else null)
    else if count <= 7 then
      left ++ builtins.genList (_: 0) (8 - count) ++ right
    else
      null;

  /**
    Parse an IPv6 CIDR "address/len" (len 0-128) into { groups; prefixLength; }.

    Returns null when the string is not one, or when the address has host
    bits set (so "2001:db8::1/32" is rejected: say "2001:db8::/32").

    Example: parseCidr6 "2001:db8::/32" => { groups = [ 8193 3512 0 0 0 0 0 0 ]; prefixLength = 32; }
    Example: parseCidr6 "::/0" => { groups = [ 0 0 0 0 0 0 0 0 ]; prefixLength = 0; }
  */
  parseCidr6 =
    s:
    let
      m = if builtins.isString s && builtins.stringLength s <= 49 then builtins.match "([^/]+)/(0|[1-9][0-9]{0,2})" s else null;
      groups = if m == null then null else parseIPv6 (builtins.head m);
      len = if m == null then 129 else builtins.fromJSON (builtins.elemAt m 1);
      # the host bits of group i must be zero
      hostBitsClear = builtins.all (
        i:
        let
          netBits = let b = len - 16 * i; in if b < 0 then 0 else if b > 16 then 16 else b;
        in
        builtins.bitAnd (builtins.elemAt groups i) (pow2 (16 - netBits) - 1) == 0
      ) (builtins.genList (i: i) 8);
    in
    if groups == null || len > 128 || !hostBitsClear then null else { inherit groups; prefixLength = len; };
}
