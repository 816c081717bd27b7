# pyrage, Python bindings for the Rust `age` crate: not in nixpkgs. It is a maturin/PyO3
# package; instead of building its Rust crate (and vendoring its Cargo.lock) we install the
# manylinux wheels its author publishes on PyPI. They are abi3 wheels (cp310-abi3), so one
# file per platform serves every CPython >= 3.10. Each url is the file's address on PyPI and
# each hash was computed from the file downloaded from there (docs/dependencies.md).
{
  lib,
  stdenv,
  buildPythonPackage,
  fetchurl,
  autoPatchelfHook,
}:
let
  version = "1.4.0";
  wheels = {
    x86_64-linux = {
      url = "https://files.pythonhosted.org/packages/d9/f0/41da7d88cfdad2eba492f3275ec50a65916ccd3a78140fb15875569ad1ff/pyrage-1.4.0-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
      hash = "sha256-f06wy8K0ruXerJhixHs4lYZt9VVBU5Ua+CLpxYHmhVg=";
    };
    aarch64-linux = {
      url = "https://files.pythonhosted.org/packages/5a/cb/d88aaab0b89141802473f6139fe8e05519d1b6ac06bff8231a1378a5674f/pyrage-1.4.0-cp310-abi3-manylinux_2_17_aarch64.manylinux2014_aarch64.whl";
      hash = "sha256-+GizYMzT+DYybUK1Mvrj6OuDQKiMygo5wK4Q/OaPbMU=";
    };
  };
  system = stdenv.hostPlatform.system;
in
buildPythonPackage {
  pname = "pyrage";
  inherit version;
  format = "wheel";

  src = fetchurl (
    wheels.${system}
      or (throw "pyrage ${version}: nix-infra packages its published wheels for ${lib.concatStringsSep " and " (builtins.attrNames wheels)} only, not ${system}")
  );

  # The extension module links glibc and libgcc_s (Rust's unwinder) only.
  nativeBuildInputs = [ autoPatchelfHook ];
  buildInputs = [ (lib.getLib stdenv.cc.cc) ];

  # none: the wheel's metadata has no Requires-Dist
  dependencies = [ ];

  pythonImportsCheck = [ "pyrage" ];

  meta = {
    description = "Python bindings for rage (age in Rust)";
    homepage = "https://github.com/woodruffw/pyrage";
    license = lib.licenses.mit;
    platforms = builtins.attrNames wheels;
    sourceProvenance = [ lib.sourceTypes.binaryNativeCode ];
  };
}
