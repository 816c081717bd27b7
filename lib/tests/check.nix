let check = import ../check.nix; in
{
  testDnsLabel = { expr = map check.isDnsLabel [ "worker001" "a" "a-b" "Web" "1abc" "a_b" "a-" "" 3 ]; expected = [ true true true false false false false false false ]; };
  testDnsLabelLength = { expr = map (n: check.isDnsLabel ("a" + builtins.concatStringsSep "" (builtins.genList (_: "b") n))) [ 62 63 ]; expected = [ true false ]; };
  testSafeFileName = { expr = map check.isSafeFileName [ "api-token" "db.password" "A_1" "../x" ".hidden" "-x" "a/b" "" ]; expected = [ true true true false false false false false ]; };
  testPort = { expr = map check.isPort [ 1 65535 0 65536 "80" ]; expected = [ true true false false false ]; };
  testLabelKey = { expr = map check.isLabelKey [ "team" "acme.io/tier" "nix-infra/cluster" "-x" "a b" ]; expected = [ true true true false false ]; };
  testLabelValue = { expr = map check.isLabelValue [ "prod" "" "a.b-c_d" "a b" "-a" ]; expected = [ true true true false false ]; };
  testSshKey = { expr = map check.isSshPublicKey [ "ssh-ed25519 AAAAC3Nz ops@laptop" "ssh-rsa AAAAB3== " "ssh-dss AAAA" "hello" ]; expected = [ true true false false ]; };
  testAnyCidr = { expr = map check.isAnyCidr [ "203.0.113.0/24" "0.0.0.0/0" "::/0" "2001:db8::/32" "10.0.0.0" "x/1" "999.0.0.0/8" "10.0.0.0/33" ]; expected = [ true true true true false false false false ]; };
  testUnknownFields = { expr = check.unknownFields "apps.api" [ "port" ] { port = 1; prot = 2; }; expected = [ "apps.api.prot: unknown field; allowed fields are: port" ]; };
  testUniqueSorted = { expr = check.uniqueSorted [ "b" "a" "b" ]; expected = [ "a" "b" ]; };
  testDuplicateKeys = { expr = check.duplicateKeys (builtins.groupBy toString [ 1 2 1 3 3 ]); expected = [ "1" "3" ]; };
}
