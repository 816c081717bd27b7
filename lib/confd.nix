# The mesh proxy's configuration, as confd renders it on every node.
#
# confd (etcdv3 backend) watches /cluster and renders a Go text/template into
# the mesh haproxy config: one frontend on 127.0.0.1:<publish port> per app of
# every group the node consumes (read from its own record
# /cluster/nodes/<self>), balancing across the app's registered instances.
# The template is generated here, next to the data model it reads (mesh.nix),
# so the two cannot drift; tests render it with Go's text/template from an etcd
# snapshot and check the result with `haproxy -c`.
let
  mesh = import ./mesh.nix;
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
    with confd's store functions: getv, exists, lsdir, gets, json).

    Takes the node name; returns the template text.

    Example: builtins.isString (haproxyTemplate "worker001") => true
  */
  haproxyTemplate = node: ''
    # rendered by confd from etcd /cluster (nix-infra mesh); do not edit
    ${header}
    {{- $self := json (getv "${mesh.nodeKey node}" "{\"services\":[]}") }}
    {{- range $group := $self.services }}
    {{- range $app := lsdir (printf "/cluster/%s" $group) }}
    {{- $metaKey := printf "/cluster/%s/%s/meta_data" $group $app }}
    {{- if exists $metaKey }}
    {{- $meta := json (getv $metaKey) }}
    {{- $mode := "tcp" }}{{ if eq (printf "%v" $meta.env.PROTOCOL) "http" }}{{ $mode = "http" }}{{ end }}

    frontend {{ $group }}_{{ $app }}
      bind 127.0.0.1:{{ $meta.publish.port }}
      mode {{ $mode }}
      default_backend {{ $group }}_{{ $app }}_instances

    backend {{ $group }}_{{ $app }}_instances
      mode {{ $mode }}
      balance roundrobin
    {{- range gets (printf "/cluster/%s/%s/instances/*" $group $app) }}
    {{- $i := json .Value }}
      server {{ $i.node }} {{ $i.ipv4 }}:{{ $i.port }} check
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
