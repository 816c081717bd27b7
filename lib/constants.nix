# The fixed vocabulary of the cluster model. One place, so error messages,
# docs and tests all say the same thing.
{
  manifestVersion = 1;

  nodeTypes = [ "ctrl" "worker" "service" "ingress" "registry" ];

  groups = [ "frontends" "backends" "services" ];

  providerTypes = [ "hetzner" "local" ];

  # Hetzner Cloud locations and the network zone each belongs to; a private
  # network spans exactly one zone, so every node must sit in that zone.
  locationZones = {
    fsn1 = "eu-central";
    nbg1 = "eu-central";
    hel1 = "eu-central";
    ash = "us-east";
    hil = "us-west";
    sin = "ap-southeast";
  };

  # Which mesh groups a node consumes when `consumes` is not set.
  defaultConsumes = {
    ctrl = [ ];
    worker = [ "services" "backends" ];
    service = [ "services" ];
    ingress = [ "frontends" ];
    registry = [ ];
  };

  # Node types that run apps; ctrl, ingress and registry host none.
  appHostTypes = [ "worker" "service" ];

  # Platform ports, opened by the node's firewall.
  ports = {
    ssh = 22;
    http = 80;
    https = 443;
    etcdClient = 2379;
    etcdPeer = 2380;
    # flannel's wireguard backend (UDP), private interface only.
    wireguard = 51820;
    # docker registry on registry nodes, private interface only.
    registry = 5000;
    # the cluster's Nix binary cache (nix-serve) on registry nodes, private interface only.
    binaryCache = 5080;
  };

  # Which platform ports (names in `ports`) a node of each type binds itself;
  # the firewall (placement.nix) opens exactly these.
  platformPorts = {
    ctrl = [ "ssh" "etcdClient" "etcdPeer" "wireguard" ];
    worker = [ "ssh" "wireguard" ];
    service = [ "ssh" "wireguard" ];
    ingress = [ "ssh" "http" "https" "wireguard" ];
    registry = [ "ssh" "registry" "binaryCache" "wireguard" ];
  };

  # What binds each platform port, for error messages.
  portUsers = {
    ssh = "sshd on every node";
    http = "the ingress proxy (http) on ingress nodes";
    https = "the ingress proxy (https) on ingress nodes";
    etcdClient = "etcd (clients) on ctrl nodes";
    etcdPeer = "etcd (peers) on ctrl nodes";
    wireguard = "the overlay (flannel/wireguard, UDP) on every node";
    registry = "the container registry on registry nodes";
    binaryCache = "the binary cache (nix-serve) on registry nodes";
  };

  # Ports the platform binds on some node type: an app may neither listen on
  # nor publish one of them, anywhere (22, 80, 443, 2379, 2380, 5000, 5080, 51820).
  reservedPorts = [ 22 80 443 2379 2380 5000 5080 51820 ];

  # Address plan of the private network: it is cut into 8 equal blocks; block
  # 0 holds the network address and Hetzner's gateway, blocks 1-5 hold the
  # numbered nodes of one type each, blocks 6-7 the nodes whose names carry no
  # number (placed by hash). See lib/addresses.nix.
  addressBlocks = {
    ctrl = 1;
    worker = 2;
    service = 3;
    ingress = 4;
    registry = 5;
    hashed = 6;
  };

  # The flannel overlay (pod/container addresses), one /24 per node; it must
  # not overlap the private network (validated).
  overlay = {
    network = "10.244.0.0/16";
  };

  # The secret a registry node signs the cluster's binary cache with
  # (`nix-store --generate-binary-cache-key`); delivered like an app secret.
  cacheKeySecret = "nix-infra-cache-key";

  # Labels the tool owns on every cloud resource; users may not set them.
  labelPrefix = "nix-infra/";

  # The prefix of every name the platform gives its own things (credentials
  # such as nix-infra-etcd-client-key, units such as nix-infra-confd.service):
  # no secret, unit, app, node or label key of the spec may start with it.
  reservedNamePrefix = "nix-infra";

  # Units the platform runs on its nodes: an app's `unit` may not name one
  # (its credentials would be loaded there, a rotation would restart it).
  # Also refused: anything starting with systemd- or dbus.
  platformUnits = [
    "sshd.service" "etcd.service" "flannel.service" "nix-serve.service" "docker-registry.service"
    "nginx.service" "podman.service" "nix-daemon.service" "nftables.service" "firewall.service"
    "network-setup.service" "dhcpcd.service" "qemu-guest-agent.service" "postgresql-setup.service"
  ];

  # Hetzner Cloud's limits: resource names (servers are hostnames, RFC 1123)
  # and label values are at most 63 characters; a label key's optional
  # prefix (a DNS subdomain) at most 253.
  hetzner = {
    nameMax = 63;
    labelPrefixMax = 253;
    # a volume's size in GB (the API's limits)
    volumeSizeMin = 10;
    volumeSizeMax = 10240;
  };

  # Volumes: the filesystems a volume may be formatted with (the first is the
  # default), and the directories a mountpoint may be neither equal to nor
  # under (the system's own; a volume mounted there would hide it).
  volumeFilesystems = [ "ext4" "xfs" ];
  # A volume is mounted at or below one of these (an allowlist: a blank volume mounted over
  # /usr, /var/run (= /run) or /var/lib/systemd would hide what the node runs on; /var/lib
  # itself only below it) and never at or below a platform directory.
  mountRoots = [ "/var/lib" "/srv" "/data" "/mnt" ];
  forbiddenMountRoots = [
    "/nix" "/boot" "/etc" "/run" "/proc" "/sys" "/dev" "/tmp"
    "/var/lib/nix-infra" "/var/lib/systemd" "/var/lib/nixos" "/var/lib/private" "/var/lib/containers"
  ];

  # An app whose unit matches this keeps data on its node even without a
  # volume (PostgreSQL, Redis/Valkey servers): its node is stateful.
  statefulUnitPattern = "postgresql\\.service|redis-.*\\.service";

  # Environment variables consumers of an app get: <PREFIX>_<suffix>.
  envSuffixes = [ "HOST" "PORT" "PROTOCOL" "PATH" ];

  # Variables that loaders, shells, language runtimes and common tools read
  # (so a consumer must never get one from the mesh): an app's prefix may not
  # produce any of these names, nor one starting with a denied prefix.
  deniedEnvNames = [
    "PATH" "HOME" "SHELL" "IFS" "ENV" "BASH_ENV" "CDPATH" "PS4" "PROMPT_COMMAND" "SHELLOPTS" "BASHOPTS"
    "GLOBIGNORE" "TMPDIR" "TZ" "TZDIR" "LANG" "LANGUAGE" "LOCPATH" "NLSPATH" "GCONV_PATH" "HOSTALIASES"
    "LOCALDOMAIN" "RES_OPTIONS" "TERMINFO" "TERMINFO_DIRS" "MANPATH" "INFOPATH" "CLASSPATH"
    "JAVA_TOOL_OPTIONS" "JDK_JAVA_OPTIONS" "HTTP_PROXY" "HTTPS_PROXY" "FTP_PROXY" "ALL_PROXY" "NO_PROXY"
    "http_proxy" "https_proxy" "ftp_proxy" "all_proxy" "no_proxy" "PKG_CONFIG_PATH" "GEM_PATH" "GEM_HOME"
    "GOPATH" "GOFLAGS" "GODEBUG" "CURL_CA_BUNDLE" "REQUESTS_CA_BUNDLE" "OPENSSL_CONF" "OPENSSL_MODULES"
    "GIO_MODULE_DIR" "GST_PLUGIN_PATH" "QT_PLUGIN_PATH" "GI_TYPELIB_PATH" "GTK_PATH" "CONTAINER_HOST"
    "DOCKER_HOST" "EDITOR" "VISUAL" "PAGER" "BROWSER" "USER" "LOGNAME" "MAIL" "TERM"
  ];
  deniedEnvPrefixes = [
    "LD_" "DYLD_" "MALLOC_" "GLIBC_" "GCONV_" "PYTHON" "NODE_" "NPM_CONFIG_" "PERL" "RUBY" "GEM_" "BUNDLE_"
    "JAVA_" "_JAVA_" "JDK_" "LUA_" "GIT_" "NIX_" "SYSTEMD_" "DBUS_" "XDG_" "LC_" "SSL_" "OPENSSL_" "CURL_"
    "DOCKER_" "CONTAINER_" "PODMAN_" "KUBERNETES_" "ETCDCTL_" "BASH_FUNC_" "SSH_" "GNUTLS_" "NSS_" "KRB5"
    # search paths and plugin directories of libraries and runtimes (a best-effort list: the
    # names a consumer gets are <PREFIX>_HOST/_PORT/_PROTOCOL/_PATH, and *_PATH is the risk)
    "SASL_" "COMPILER_" "LIBRARY_" "C_INCLUDE_" "CPLUS_INCLUDE_" "QT_" "QML" "GST_" "JULIA_" "GUILE_" "CAML_"
    "OCAML" "LIBGL_" "VK_" "LADSPA" "LV2" "DSSI" "GDAL_" "MAGICK_" "CORECLR_" "DOTNET_" "MIX_" "ERL_" "FONTCONFIG"
    "GTK_" "GDK_" "GIO_" "GI_" "GSETTINGS" "PKG_CONFIG" "ACLOCAL" "PERL5" "R_" "TCL" "TK_" "DENO_" "BUN_" "CARGO_"
    "RUST" "GOROOT" "GOENV" "GOPROXY" "GOTOOLCHAIN" "ANDROID_" "KDE" "PLASMA" "MOZ_" "HSA_" "CUDA_" "OCL_" "OPENCL" "VDPAU_" "LIBVA_" "SANE_" "ALSA_"
  ];
}
