# Runs every named lib test: `nix-instantiate --eval --strict --json lib/tests`
# gives { total; failures = [ { name; expected; result; } ]; }.
# Each file maps test names to { expr; expected; } (as nixpkgs lib/tests/misc.nix).
let
  files = [ "ip" "shell" "check" "spec" "addresses" "mesh" "placement" "waves" "validate" "manifest" "cluster" "confd" "nodeconfig" "cluster-flake" ];
  tests = builtins.concatMap (
    f:
    let t = import (./. + "/${f}.nix"); in
    map (n: t.${n} // { name = "${f}.${n}"; }) (builtins.attrNames t)
  ) files;
  failures = map (t: { inherit (t) name expected; result = t.expr; }) (builtins.filter (t: t.expr != t.expected) tests);
in
{
  total = builtins.length tests;
  inherit failures;
}
