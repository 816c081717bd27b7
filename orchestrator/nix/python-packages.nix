# The Python packages nix-infra needs that nixpkgs does not have, built with the given
# Python package set (its callPackage). Used by the package (../package.nix) and by the
# flake's devShell, so both get the same ones.
{ callPackage }:
{
  pyrage = callPackage ./pyrage.nix { };
  cslab-etcd3 = callPackage ./cslab-etcd3.nix { };
}
