# A stand-in for the nixpkgs package set the modules use: every package is a
# derivation-shaped attrset whose store path is derived from its name (nothing
# is built); the trivial builders hash their text into the path, so forcing a
# path forces the text. Unknown attributes fail, as a typo would upstream.
let
  drv =
    name: text:
    let
      hash = builtins.substring 0 32 (builtins.hashString "sha256" "${name}\n${text}");
    in
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/${hash}-${name}";
      drvPath = "/nix/store/${hash}-${name}.drv";
      outputName = "out";
      outputs = [ "out" ];
      system = "x86_64-linux";
      meta = { };
    };
  package = name: drv name "" // { pname = name; version = "0-stand-in"; };
  names = [
    "bash" "check-jsonschema" "coreutils" "curl" "diffutils" "docker-distribution" "e2fsprogs" "gnugrep" "gnused" "etcd" "flannel" "gawk" "haproxy" "confd"
    "nginx" "nix-serve" "openssh" "openssl" "podman" "postgresql_17" "redis" "restic" "systemd" "util-linux" "valkey" "xfsprogs"
  ];
in
builtins.listToAttrs (map (n: { name = n; value = package n; }) names)
// {
  writeText = name: text: drv name text;
  writeShellScript = name: text: drv name text;
  writeScript = name: text: drv name text;
  runCommand = name: env: script: drv name (builtins.toJSON env + script);
}
