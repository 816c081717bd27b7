let
  check = import ../check.nix;
  long = n: builtins.concatStringsSep "" (builtins.genList (_: "a") n);
in
{
  testDnsLabel = { expr = map check.isDnsLabel [ "worker001" "a" "a-b" "Web" "1abc" "a_b" "a-" "" 3 ]; expected = [ true true true false false false false false false ]; };
  testDnsLabelLength = { expr = map (n: check.isDnsLabel ("a" + builtins.concatStringsSep "" (builtins.genList (_: "b") n))) [ 62 63 ]; expected = [ true false ]; };
  testSafeFileName = { expr = map check.isSafeFileName [ "api-token" "db.password" "A_1" "../x" ".hidden" "-x" "a/b" "" ]; expected = [ true true true false false false false false ]; };
  testPort = { expr = map check.isPort [ 1 65535 0 65536 "80" ]; expected = [ true true false false false ]; };
  testLabelKey = { expr = map check.isLabelKey [ "team" "acme.io/tier" "nix-infra/cluster" "-x" "a b" ]; expected = [ true true true false false ]; };
  testLabelValue = { expr = map check.isLabelValue [ "prod" "" "a.b-c_d" "a b" "-a" ]; expected = [ true true true false false ]; };
  testSshKey = { expr = map check.isSshPublicKey [ "ssh-ed25519 AAAAC3Nz ops@laptop" "ssh-rsa AAAAB3== " "ssh-dss AAAA" "hello" ]; expected = [ true true false false ]; };
  testAnyCidr = { expr = map check.isAnyCidr [ "203.0.113.0/24" "0.0.0.0/0" "::/0" "2001:db8::/32" "10.0.0.0" "x/1" "999.0.0.0/8" "10.0.0.0/33" ]; expected = [ true true true true false false false false ]; };
  testAnyCidrRefusesHostBitsAndNonAddresses = {
    expr = map check.isAnyCidr [ ":/0" "203.0.113.7/24" "2001:db8::1/32" "2001::db8::/32" "::/129" "fe80::1%eth0/128" "::ffff:192.0.2.0/120" "2001:db8::/032" ];
    expected = [ false false false false false false true false ];
  };
  testUnknownFields = { expr = check.unknownFields "apps.api" [ "port" ] { port = 1; prot = 2; }; expected = [ "apps.api.prot: unknown field; allowed fields are: port" ]; };
  testUniqueSorted = { expr = check.uniqueSorted [ "b" "a" "b" ]; expected = [ "a" "b" ]; };
  testDuplicateKeys = { expr = check.duplicateKeys (builtins.groupBy toString [ 1 2 1 3 3 ]); expected = [ "1" "3" ]; };
  testUrlPath = {
    expr = map check.isUrlPath [ "/" "/healthz" "/healthz?full=1&verbose=1" "/a%2Fb/c;v=1/" "/x?y=/z?" "/~user/@x:1" ];
    expected = [ true true true true true true ];
  };
  testUrlPathRefused = {
    expr = map check.isUrlPath [ "" "v1" "//host/x" "/x;touch /tmp/P" "/a b" "/a\nb" "/a#frag" "/%zz" "/\"" "/a\\b" "/\${x}" "/{{.}}" "/é" ("/" + long 1024) 3 ];
    expected = [ false false false false false false false false false false false false false false false ];
  };
  testUrlPathLengthLimit = { expr = map check.isUrlPath [ ("/" + long 1023) ("/" + long 1024) ]; expected = [ true false ]; };
  testOciReference = {
    expr = map check.isOciReference [
      "api" "api:1" "ghcr.io/acme/api:1.4" "localhost:5000/a/b_c__d-e.f:v1_x-y.z" "registry.example/app0000:1"
      "docker.io/library/postgres@sha256:${builtins.concatStringsSep "" (builtins.genList (_: "ab") 32)}"
      "10.10.160.1:5000/api:latest"
    ];
    expected = [ true true true true true true true ];
  };
  testOciReferenceRefused = {
    expr = map check.isOciReference [
      "" "ghcr.io/acme/api:1 --privileged -v /:/host" "ghcr.io/Acme/api" "-api" "api:" "api:-x" "api@sha256:abc"
      "api:${long 129}" "ghcr.io/${long 250}" "a//b" "a/b/" "a;b" "$(id)" "api\n"
    ];
    expected = [ false false false false false false false false false false false false false false ];
  };
  testOciTagAndNameLimits = { expr = map check.isOciReference [ "api:${long 128}" "a/${long 253}" "a/${long 254}" ]; expected = [ true true false ]; };
  testUnitName = {
    expr = map check.isUnitName [ "postgresql.service" "podman-api.service" "getty@tty1.service" "a:b_c.d-e.service" ];
    expected = [ true true true true ];
  };
  testUnitNameRefused = {
    expr = map check.isUnitName [ "-Hroot@example.service" ".x.service" "postgresql" "a b.service" "a@.service" "a@b@c.service" "a\\x2d.service" "x.socket" "@x.service" ];
    expected = [ false false false false false false false false false ];
  };
  testUnitNameLength = { expr = map check.isUnitName [ (long 247 + ".service") (long 248 + ".service") ]; expected = [ true false ]; };
  testReservedName = {
    expr = map check.isReservedName [ "nix-infra-etcd-client-key" "nix-infra" "NIX-INFRA-x" "nix-infra/cluster" "nix-infra.io/x" "nix-infra-confd.service" "nix-infrastructure" "my-nix-infra" "api" ];
    expected = [ true true true true true true false false false ];
  };
  testDeniedEnvName = {
    expr = map check.isDeniedEnvName [ "LD_LIBRARY_PATH" "LD_X_HOST" "PATH" "PYTHONX_PORT" "NODE_X_PATH" "NIX_PATH" "GCONV_PATH" "KUBERNETES_SERVICE_HOST" "DOCKER_HOST" "API_PATH" "DB_HOST" "LDX_HOST" ];
    expected = [ true true true true true true true true true false false false ];
  };
  testHetznerName = { expr = map check.isHetznerName [ "debian-12" "ubuntu-24.04" "cx22" "12345678" "" "Debian" "-x" "cx22; reboot" (long 64) ]; expected = [ true true true true false false false false false ]; };
  testLabelKeyPrefixLimits = {
    expr = map check.isLabelKey [ (long 253 + "/k") (long 254 + "/k") "${long 63}.io/k" "${long 64}.io/k" "a/b/c" ];
    expected = [ false false true false false ];
  };
  testSshKeyRefusesControlCharacters = {
    expr = map check.isSshPublicKey [ "ssh-ed25519 AAAAC3Nz ops\rx" "ssh-ed25519 AAAAC3Nz ops\tx" "ssh-ed25519 AAAAC3Nz ops laptop" ];
    expected = [ false false true ];
  };
  testPathSegment = { expr = map check.pathSegment [ "web" "My.App" "a\n  - name: ok" "a b" ]; expected = [ "web" "My.App" "\"a\\n  - name: ok\"" "\"a b\"" ]; };
  testShowCutsLongStrings = { expr = check.show (long 300); expected = "\"${long 100}\"... (300 characters)"; };
  testUnknownFieldQuotesHostileNames = {
    expr = check.unknownFields "apps.api" [ "port" ] { "x\n  - name: fine" = 1; };
    expected = [ "apps.api.\"x\\n  - name: fine\": unknown field; allowed fields are: port" ];
  };
  testToLower = { expr = check.toLower "Api-TOKEN_1"; expected = "api-token_1"; };
}
