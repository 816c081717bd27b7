# Predicates and message helpers used by validation. Each predicate takes any
# value and returns a bool, so a wrong type is simply "not valid".
let
  ip = import ./ip.nix;
in
rec {
  /**
    Whether a value is an RFC 1123 DNS label: lowercase letters, digits and
    '-', 1-63 chars, starting with a letter and not ending with '-'.

    Example: isDnsLabel "worker001" => true; isDnsLabel "Web_1" => false
  */
  isDnsLabel = s: builtins.isString s && builtins.match "[a-z]([-a-z0-9]{0,61}[a-z0-9])?" s != null;

  /**
    Whether a value is a safe file name for a secret or credential: 1-64
    chars of letters, digits, '.', '_', '-', not starting with '.' or '-'.

    Example: isSafeFileName "api-token" => true; isSafeFileName "../x" => false
  */
  isSafeFileName = s: builtins.isString s && builtins.match "[A-Za-z0-9_][A-Za-z0-9._-]{0,63}" s != null;

  /**
    Whether a value is a TCP/UDP port number (an int in 1..65535).

    Example: isPort 8080 => true; isPort 0 => false; isPort "80" => false
  */
  isPort = p: builtins.isInt p && p >= 1 && p <= 65535;

  /**
    Whether a value is a Hetzner label key: an optional DNS-subdomain prefix
    and '/', then a name of at most 63 chars of alphanumerics, '-', '_', '.',
    beginning and ending alphanumeric.

    Example: isLabelKey "team" => true; isLabelKey "acme.io/tier" => true
  */
  isLabelKey =
    k:
    builtins.isString k
    && builtins.match "(([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?" k != null;

  /**
    Whether a value is a Hetzner label value: empty, or at most 63 chars of
    alphanumerics, '-', '_', '.', beginning and ending alphanumeric.

    Example: isLabelValue "prod" => true; isLabelValue "a b" => false
  */
  isLabelValue = v: builtins.isString v && builtins.match "([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?" v != null;

  /**
    Whether a value is an OpenSSH public key line ("<type> <base64> [comment]").

    Example: isSshPublicKey "ssh-ed25519 AAAAC3Nz ops@laptop" => true
  */
  isSshPublicKey =
    s:
    builtins.isString s
    && builtins.match "(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\\.com|sk-ecdsa-sha2-nistp256@openssh\\.com) [A-Za-z0-9+/]+=*( [^\n]*)?" s != null;

  /**
    Whether a value is an IPv4 or IPv6 CIDR as accepted by Hetzner firewall
    rules (shape only, IPv6 is not normalised).

    Example: isAnyCidr "203.0.113.0/24" => true; isAnyCidr "::/0" => true
  */
  isAnyCidr =
    s:
    let
      v4 = if builtins.isString s then builtins.match "([0-9.]+)/([0-9]|[12][0-9]|3[0-2])" s else null;
    in
    builtins.isString s
    && (
      (v4 != null && ip.parseIPv4 (builtins.head v4) != null)
      || builtins.match "[0-9a-fA-F:]*:[0-9a-fA-F:]*/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8])" s != null
    );

  /**
    Render a list of strings for a message: "a, b, c".

    Example: showList [ "a" "b" ] => "a, b"
  */
  showList = l: builtins.concatStringsSep ", " l;

  /**
    Render any value for a message (strings quoted, others as JSON).

    Example: show "x" => "\"x\""; show 3 => "3"
  */
  show =
    v:
    if builtins.isFunction v then
      "a function"
    else if builtins.isPath v then
      "a path"
    else
      builtins.toJSON v;

  /**
    Errors for fields of attrset `value` at `path` not in `allowed`.

    Example: unknownFields "apps.api" [ "port" ] { port = 1; prot = 2; }
      => [ "apps.api.prot: unknown field; allowed fields are: port" ]
  */
  unknownFields =
    path: allowed: value:
    map (k: "${path}.${k}: unknown field; allowed fields are: ${showList allowed}") (
      builtins.filter (k: !(builtins.elem k allowed)) (builtins.attrNames value)
    );

  /**
    Sort and remove duplicates from a list of strings.

    Example: uniqueSorted [ "b" "a" "b" ] => [ "a" "b" ]
  */
  uniqueSorted = l: builtins.attrNames (builtins.listToAttrs (map (x: { name = x; value = null; }) l));

  /**
    The keys of a groupBy result whose groups hold more than one element.

    Example: duplicateKeys (builtins.groupBy toString [ 1 2 1 ]) => [ "1" ]
  */
  duplicateKeys = groups: builtins.filter (k: builtins.length groups.${k} > 1) (builtins.attrNames groups);
}
