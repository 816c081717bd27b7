# IPv4 arithmetic on builtins only: parse, format, CIDR ranges.
#
# Addresses are handled as integers (Nix ints are 64-bit), so ranges and
# offsets are plain arithmetic. Every parser returns null on bad input so the
# caller (validate.nix) can phrase the error with the field path.
let
  pow2 = n: builtins.foldl' (acc: _: acc * 2) 1 (builtins.genList (x: x) n);

  octetOk = s: builtins.match "(0|[1-9][0-9]{0,2})" s != null && builtins.fromJSON s <= 255;
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
}
