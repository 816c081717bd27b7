# Predicates and message helpers used by validation. Each predicate takes any
# value and returns a bool, so a wrong type is simply "not valid".
let
  ip = import ./ip.nix;
  c = import ./constants.nix;

  # Characters toJSON leaves as they are but a terminal may act on: DEL, the
  # C1 controls (U+0080-U+009F), the line/paragraph separators and the bidi
  # overrides/isolates. `show` writes them as \u escapes.
  hex4 = i: let d = builtins.substring; h = "0123456789abcdef"; in
    d (i / 4096) 1 h + d (builtins.bitAnd (i / 256) 15) 1 h + d (builtins.bitAnd (i / 16) 15) 1 h + d (builtins.bitAnd i 15) 1 h;
  invisibleCodes = [ 127 ] ++ builtins.genList (i: 128 + i) 32 ++ [ 8232 8233 8234 8235 8236 8237 8238 8294 8295 8296 8297 ];
  invisible = map (i: builtins.fromJSON "\"\\u${hex4 i}\"") invisibleCodes;
  invisibleEscaped = map (i: "\\u${hex4 i}") invisibleCodes;

  lower = builtins.replaceStrings
    (builtins.genList (i: builtins.substring i 1 "ABCDEFGHIJKLMNOPQRSTUVWXYZ") 26)
    (builtins.genList (i: builtins.substring i 1 "abcdefghijklmnopqrstuvwxyz") 26);

  # RFC 3986: pchar = unreserved / pct-encoded / sub-delims / ":" / "@"
  pchar = "([-A-Za-z0-9._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})";
  urlPathRe = "/(${pchar}+(/${pchar}*)*)?(\\?(${pchar}|[/?])*)?";

  # github.com/distribution/reference: [domain/]path[:tag][@digest]
  domainComponent = "([A-Za-z0-9]|[A-Za-z0-9][-A-Za-z0-9]*[A-Za-z0-9])";
  domain = "${domainComponent}(\\.${domainComponent})*(:[0-9]+)?";
  pathComponent = "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*";
  ociRe = "((${domain}/)?${pathComponent}(/${pathComponent})*)(:[A-Za-z0-9_][-A-Za-z0-9_.]{0,127})?(@sha256:[0-9a-f]{64})?";
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
    (at most 253 chars, lowercase labels of at most 63) and '/', then a name
    of at most 63 chars of alphanumerics, '-', '_', '.', beginning and ending
    alphanumeric.

    Example: isLabelKey "team" => true; isLabelKey "acme.io/tier" => true
  */
  isLabelKey =
    k:
    let
      m = if builtins.isString k && builtins.stringLength k <= c.hetzner.labelPrefixMax + 64 then builtins.match "(([^/]*)/)?([^/]*)" k else null;
      prefix = builtins.elemAt m 1;
      name = builtins.elemAt m 2;
    in
    m != null
    && (prefix == null || (builtins.stringLength prefix <= c.hetzner.labelPrefixMax && builtins.match "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*" prefix != null))
    && builtins.match "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?" name != null;

  /**
    Whether a value is a Hetzner label value: empty, or at most 63 chars of
    alphanumerics, '-', '_', '.', beginning and ending alphanumeric.

    Example: isLabelValue "prod" => true; isLabelValue "a b" => false
  */
  isLabelValue = v: builtins.isString v && builtins.match "([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?" v != null;

  /**
    Whether a value is an OpenSSH public key line ("<type> <base64> [comment]"):
    at most 8192 chars, the comment without control characters (so no
    second line can ride along into authorized_keys).

    Example: isSshPublicKey "ssh-ed25519 AAAAC3Nz ops@laptop" => true
  */
  isSshPublicKey =
    s:
    builtins.isString s
    && builtins.stringLength s <= 8192
    && builtins.match "(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\\.com|sk-ecdsa-sha2-nistp256@openssh\\.com) [A-Za-z0-9+/]+={0,3}( [^[:cntrl:]]*)?" s != null;

  /**
    Whether a value is an IPv4 or IPv6 network in CIDR form with no host
    bits set (ip.parseCidr, ip.parseCidr6: full IPv6 grammar, `::`
    compression, prefix 0-128).

    Example: isAnyCidr "203.0.113.0/24" => true; isAnyCidr "::/0" => true
    Example: isAnyCidr "203.0.113.7/24" => false; isAnyCidr ":/0" => false
  */
  isAnyCidr = s: ip.parseCidr s != null || ip.parseCidr6 s != null;

  /**
    Whether a value is an absolute URL path with an optional query, as RFC
    3986 allows in an HTTP request target (path-absolute [ "?" query ]): at
    most 1024 chars of unreserved characters, sub-delims, ':', '@', '/',
    '?' and %XX escapes; no space, quote, backslash, '#', control character
    or non-ASCII byte. Sub-delims such as '&' and ';' are allowed, so every
    sink must quote the path (nodeconfig.healthCommand does).

    Example: isUrlPath "/healthz?full=1&verbose=1" => true
    Example: isUrlPath "/x touch" => false; isUrlPath "//evil.example/" => false
  */
  isUrlPath = s: builtins.isString s && builtins.stringLength s <= 1024 && builtins.match urlPathRe s != null;

  /**
    Whether a value is an OCI image reference in the grammar of
    github.com/distribution/reference: an optional registry host (DNS name
    or IPv4, optional :port) and '/', lowercase path components separated by
    '/' (each alphanumerics joined by '.', '_', '__' or '-'), an optional
    :tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}) and an optional @sha256:<64 hex>
    digest. The name (before tag and digest) is at most 255 chars.

    Example: isOciReference "ghcr.io/acme/api:1.4" => true
    Example: isOciReference "ghcr.io/acme/api:1 --privileged" => false
  */
  isOciReference =
    s:
    let
      m = if builtins.isString s && builtins.stringLength s <= 255 + 129 + 72 then builtins.match ociRe s else null;
    in
    m != null && builtins.stringLength (builtins.head m) <= 255;

  /**
    Whether a value is the name of a systemd service unit an app may run
    as: `name.service` or a template instance `name@instance.service`, at
    most 255 chars of letters, digits, ':', '_', '.', '-' (and one '@'), not
    starting with '-' or '.'. systemd also allows '\' (for \xNN escapes);
    nix-infra does not.

    Example: isUnitName "postgresql.service" => true; isUnitName "-Hroot@x.service" => false
  */
  isUnitName =
    s:
    builtins.isString s
    && builtins.stringLength s <= 255
    && builtins.match "[A-Za-z0-9:_][-A-Za-z0-9:_.]*(@[-A-Za-z0-9:_.]+)?\\.service" s != null;

  /**
    Whether a name uses the prefix the platform reserves for its own
    credentials, units and labels: "nix-infra" (any case) alone or followed
    by '-', '/', '.', '_' or '@'.

    Example: isReservedName "nix-infra-etcd-client-key" => true; isReservedName "nix-infrastructure" => false
  */
  isReservedName = s: builtins.isString s && builtins.match "${c.reservedNamePrefix}([-/._@].*)?" (lower s) != null;

  /**
    Whether an environment variable name is one that loaders, shells,
    language runtimes or common tools read (constants.deniedEnvNames, or a
    name starting with one of constants.deniedEnvPrefixes).

    Example: isDeniedEnvName "LD_LIBRARY_PATH" => true; isDeniedEnvName "API_PATH" => false
  */
  isDeniedEnvName =
    n:
    builtins.elem n c.deniedEnvNames
    || builtins.any (p: builtins.substring 0 (builtins.stringLength p) n == p) c.deniedEnvPrefixes;

  /**
    Whether a value is a Hetzner image name (or snapshot id) or server type
    name: 1-63 chars of lowercase letters, digits, '.', '_', '-', starting
    alphanumeric.

    Example: isHetznerName "debian-12" => true; isHetznerName "cx22; reboot" => false
  */
  isHetznerName = s: builtins.isString s && builtins.match "[a-z0-9][-a-z0-9._]{0,62}" s != null;

  /**
    Whether a value is a normalised absolute path a volume may be mounted
    at: '/' then components of letters, digits, '.', '_', '-' (not starting
    with '.' or '-', so no "." or ".." and no hidden directories), joined by
    single '/', no trailing '/', at most 255 characters; not "/" and neither
    equal to nor under a system directory (constants.forbiddenMountRoots).

    Example: isMountpoint "/var/lib/postgresql" => true
    Example: isMountpoint "/var/lib/../etc" => false; isMountpoint "/nix/store" => false
  */
  isMountpoint =
    s:
    builtins.isString s
    && builtins.stringLength s <= 255
    && builtins.match "(/[A-Za-z0-9_][A-Za-z0-9._-]*)+" s != null
    && builtins.any (r: builtins.substring 0 (builtins.stringLength r + 1) s == "${r}/" || (s == r && r != "/var/lib")) c.mountRoots
    && !(builtins.any (r: s == r || builtins.substring 0 (builtins.stringLength r + 1) s == "${r}/") c.forbiddenMountRoots);

  /**
    Render one segment of a field path: as it is when it is a plain name
    (letters, digits, '_', '.', '-'; at most 100 chars), else as a JSON
    string, so a hostile attribute name cannot forge lines or paths in a message.

    Example: pathSegment "web" => "web"; pathSegment "a\nb" => "\"a\\nb\""
  */
  pathSegment = k: if builtins.stringLength k <= 100 && builtins.match "[A-Za-z0-9_.-]+" k != null then k else show k;

  /**
    A string with its ASCII letters in lower case.

    Example: toLower "Api-Token" => "api-token"
  */
  toLower =
    builtins.replaceStrings
      (builtins.genList (i: builtins.substring i 1 "ABCDEFGHIJKLMNOPQRSTUVWXYZ") 26)
      (builtins.genList (i: builtins.substring i 1 "abcdefghijklmnopqrstuvwxyz") 26);

  /**
    Render a list of strings for a message: "a, b, c".

    Example: showList [ "a" "b" ] => "a, b"
  */
  showList = l: builtins.concatStringsSep ", " l;

  /**
    Render any value for a message (strings quoted, others as JSON; a
    string of more than 200 bytes is cut to its first 100 (when they are
    printable ASCII; else only its length is shown); DEL,
    C1 controls, line separators and bidi overrides as \u escapes, so a
    message cannot act on the terminal or hide text).

    Example: show "x" => "\"x\""; show 3 => "3"; show "a\nb" => "\"a\\nb\""
  */
  show =
    v:
    if builtins.isFunction v then
      "a function"
    else if builtins.isPath v then
      "a path"
    else if builtins.isString v && builtins.stringLength v > 200 then
      let head = builtins.substring 0 100 v; in
      # the first 100 bytes, when cutting there cannot split a UTF-8 character
      (if builtins.match "[ -~]*" head != null then "${show head}... " else "a string ") + "(${toString (builtins.stringLength v)} characters)"
    else
      builtins.replaceStrings invisible invisibleEscaped (builtins.toJSON v);

  /**
    Errors for fields of attrset `value` at `path` not in `allowed`.

    Example: unknownFields "apps.api" [ "port" ] { port = 1; prot = 2; }
      => [ "apps.api.prot: unknown field; allowed fields are: port" ]
  */
  unknownFields =
    path: allowed: value:
    map (k: "${path}.${pathSegment k}: unknown field; allowed fields are: ${showList allowed}") (
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
