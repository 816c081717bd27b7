# The mesh proxy's configuration, as confd renders it on every node.
#
# confd (etcdv3 backend) watches /cluster and renders a Go text/template into
# the mesh haproxy config: one frontend on 127.0.0.1:<publish port> per app of
# every group the node consumes (read from its own record
# /cluster/nodes/<self>), balancing across the app's registered instances.
# The template is generated here, next to the data model it reads (mesh.nix),
# so the two cannot drift; tests render it with the real confd from a real etcd
# and check the result with `haproxy -c`.
let
  mesh = import ./mesh.nix;
  constants = import ./constants.nix;
  commaList = builtins.concatStringsSep ",";
in
rec {
  /**
    The part every mesh haproxy config starts with: process settings and
    defaults. Alone, it is the valid empty config haproxy starts with before
    confd's first render.

    Example: builtins.substring 0 6 header => "global"
  */
  header = ''
    global
      maxconn 4096
      # the master process re-executes itself on reload (SIGUSR2); workers drain
      stats socket /run/nix-infra-mesh/haproxy.sock mode 600 expose-fd listeners level user

    defaults
      mode tcp
      timeout connect 5s
      timeout client 1m
      timeout server 1m
      timeout check 5s
  '';

  /**
    The confd template of a node's mesh haproxy config (Go text/template
    with confd's functions: getv, lsdir, gets, base, split, contains,
    trimSuffix, replace, atoi).

    Every record is untrusted input, checked before use and skipped when it is
    not what nix-infra writes, so one bad record never aborts the render (which
    would freeze the config) nor puts its text into it:

    - the node's own record: the groups it consumes are read from its canonical
      JSON tail `"services":[...]}`; only the three mesh groups count;
    - an app (directory name) must be a name (`a-z`, `0-9`, `-`, at most 63);
    - its meta_data must end in `"publish":{"port":P}}` with P a port
      (1-65535, decimal, no leading zero) that is not reserved by the platform
      and not already published by an app rendered before it, preceded by
      `,"port":Q,` with Q the port its instances listen on (1-65535);
    - an instance record must be exactly the canonical JSON the registration
      script writes, `{"ipv4":"A.B.C.D","node":"N","port":Q}`, with an IPv4
      address, a port, and N equal to the key's last segment, which must be a
      name; the server is named after the key;
    - and it must point where the admin says: Q equals the app's port from
      its meta_data, and A.B.C.D the `ipv4` of the admin-written record
      /cluster/nodes/N (its canonical head `{"ipv4":"A.B.C.D","name":"N",`),
      so a node's certificate, which may write its own instance keys, cannot
      point consumers at the metadata service, a loopback or another port.

    confd's `json` aborts the whole render on invalid JSON, and `atoi` on
    anything but digits, so neither is ever called on an unchecked value:
    values are cut with `split` and compared, digits checked one by one.

    Takes the node name; returns the template text.

    Example: builtins.isString (haproxyTemplate "worker001") => true
  */
  haproxyTemplate = node: ''
    # rendered by confd from etcd /cluster (nix-infra mesh); do not edit
    ${header}
    {{- $digits := "0123456789" }}
    {{- $nameChars := "abcdefghijklmnopqrstuvwxyz0123456789-" }}
    {{- $reserved := ",${commaList (map toString constants.reservedPorts)}," }}
    {{- $published := "," }}
    {{- $consumed := "" }}
    {{- $selfParts := split (getv "${mesh.nodeKey node}" "") "\"services\":[" }}
    {{- if eq (len $selfParts) 2 }}
    {{- $tail := index $selfParts 1 }}
    {{- if eq (printf "%s]}" (trimSuffix $tail "]}")) $tail }}
    {{- $consumed = printf ",%s," (trimSuffix $tail "]}") }}
    {{- end }}
    {{- end }}
    {{- range $group := split "${commaList constants.groups}" "," }}
    {{- if contains $consumed (printf ",\"%s\"," $group) }}
    {{- range $app := lsdir (printf "/cluster/%s" $group) }}
    {{- $appOk := and (ge (len $app) 1) (le (len $app) 63) }}
    {{- range split $app "" }}{{ if not (contains $nameChars .) }}{{ $appOk = false }}{{ end }}{{ end }}
    {{- $meta := getv (printf "/cluster/%s/%s/meta_data" $group $app) "" }}
    {{- $publish := 0 }}
    {{- $appPort := 0 }}
    {{- $metaParts := split $meta "\"publish\":{\"port\":" }}
    {{- if and $appOk (eq (len $metaParts) 2) }}
    {{- $tail := index $metaParts 1 }}
    {{- $p := trimSuffix $tail "}}" }}
    {{- $pOk := and (eq (printf "%s}}" $p) $tail) (ge (len $p) 1) (le (len $p) 5) }}
    {{- range split $p "" }}{{ if not (contains $digits .) }}{{ $pOk = false }}{{ end }}{{ end }}
    {{- if $pOk }}{{ if eq (printf "%d" (atoi $p)) $p }}{{ $publish = atoi $p }}{{ end }}{{ end }}
    {{- $appPort = 0 }}
    {{- $portParts := split (index $metaParts 0) ",\"port\":" }}
    {{- if eq (len $portParts) 2 }}
    {{- $pt := index $portParts 1 }}
    {{- $ap := trimSuffix $pt "," }}
    {{- $apOk := and (eq (printf "%s," $ap) $pt) (ge (len $ap) 1) (le (len $ap) 5) }}
    {{- range split $ap "" }}{{ if not (contains $digits .) }}{{ $apOk = false }}{{ end }}{{ end }}
    {{- if $apOk }}{{ if eq (printf "%d" (atoi $ap)) $ap }}{{ $appPort = atoi $ap }}{{ end }}{{ end }}
    {{- end }}
    {{- end }}
    {{- if and (ge $publish 1) (le $publish 65535) (ge $appPort 1) (le $appPort 65535) (not (contains $reserved (printf ",%d," $publish))) (not (contains $published (printf ",%d," $publish))) }}
    {{- $published = printf "%s%d," $published $publish }}
    {{- $mode := "tcp" }}{{ if contains $meta "\"PROTOCOL\":\"http\"" }}{{ $mode = "http" }}{{ end }}

    frontend {{ $group }}_{{ $app }}
      bind 127.0.0.1:{{ $publish }}
      mode {{ $mode }}
      default_backend {{ $group }}_{{ $app }}_instances

    backend {{ $group }}_{{ $app }}_instances
      mode {{ $mode }}
      balance roundrobin
    {{- range gets (printf "/cluster/%s/%s/instances/*" $group $app) }}
    {{- $node := base .Key }}
    {{- $f := split .Value "\"" }}
    {{- $ok := and (eq (len $f) 11) (ge (len $node) 1) (le (len $node) 63) }}
    {{- range split $node "" }}{{ if not (contains $nameChars .) }}{{ $ok = false }}{{ end }}{{ end }}
    {{- $ip := "" }}
    {{- $port := 0 }}
    {{- if $ok }}
    {{- $ok = and (eq (index $f 0) "{") (eq (index $f 1) "ipv4") (eq (index $f 2) ":") (eq (index $f 4) ",") (eq (index $f 5) "node") (eq (index $f 6) ":") (eq (index $f 7) $node) (eq (index $f 8) ",") (eq (index $f 9) "port") }}
    {{- $ip = index $f 3 }}
    {{- $octets := split $ip "." }}
    {{- if ne (len $octets) 4 }}{{ $ok = false }}{{ end }}
    {{- range $octets }}
    {{- $o := . }}
    {{- if or (lt (len $o) 1) (gt (len $o) 3) }}{{ $ok = false }}{{ end }}
    {{- range split $o "" }}{{ if not (contains $digits .) }}{{ $ok = false }}{{ end }}{{ end }}
    {{- if $ok }}{{ if or (ne (printf "%d" (atoi $o)) $o) (gt (atoi $o) 255) }}{{ $ok = false }}{{ end }}{{ end }}
    {{- end }}
    {{- $pt := index $f 10 }}
    {{- $pp := trimSuffix $pt "}" }}
    {{- $pd := replace $pp ":" "" 1 }}
    {{- if or (ne (printf "%s}" $pp) $pt) (ne (printf ":%s" $pd) $pp) (lt (len $pd) 1) (gt (len $pd) 5) }}{{ $ok = false }}{{ end }}
    {{- range split $pd "" }}{{ if not (contains $digits .) }}{{ $ok = false }}{{ end }}{{ end }}
    {{- if $ok }}{{ if eq (printf "%d" (atoi $pd)) $pd }}{{ $port = atoi $pd }}{{ end }}{{ end }}
    {{- end }}
    {{- if $ok }}
    {{- $own := split (getv (printf "/cluster/nodes/%s" $node) "") (printf "{\"ipv4\":\"%s\",\"name\":\"%s\"," $ip $node) }}
    {{- if or (ne (len $own) 2) (ne (index $own 0) "") }}{{ $ok = false }}{{ end }}
    {{- end }}
    {{- if and $ok (ge $port 1) (le $port 65535) (eq $port $appPort) }}
      server {{ $node }} {{ $ip }}:{{ $port }} check
    {{- end }}
    {{- end }}
    {{- end }}
    {{- end }}
    {{- end }}
    {{- end }}
  '';

  /**
    confd's template resource (TOML) for the mesh config.

    Takes { src; dest; checkCmd; reloadCmd; }; returns the TOML text
    (confd's [template] table: src, dest, keys, mode, check_cmd, reload_cmd).

    Example: resourceToml { src = "t"; dest = "/d"; checkCmd = "c"; reloadCmd = "r"; }
      => "[template]\nsrc = \"t\"\ndest = \"/d\"\nkeys = [\"/cluster\"]\nmode = \"0644\"\ncheck_cmd = \"c\"\nreload_cmd = \"r\"\n"
  */
  resourceToml =
    { src, dest, checkCmd, reloadCmd }:
    ''
      [template]
      src = "${src}"
      dest = "${dest}"
      keys = ["/cluster"]
      mode = "0644"
      check_cmd = "${checkCmd}"
      reload_cmd = "${reloadCmd}"
    '';
}
