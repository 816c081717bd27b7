# cslab-etcd3, the etcd v3 API client (module `etcd3`): not in nixpkgs, whose `etcd3` is
# the original python-etcd3 0.12.0 (fails to import with protobuf >= 4). Built from the
# sdist published on PyPI; the url is the file's address there and the hash was computed
# from the file downloaded from there (docs/dependencies.md).
{
  lib,
  buildPythonPackage,
  fetchurl,
  setuptools,
  grpcio,
  protobuf,
  six,
}:
buildPythonPackage {
  pname = "cslab-etcd3";
  version = "0.12.1";
  pyproject = true;

  src = fetchurl {
    url = "https://files.pythonhosted.org/packages/23/55/81140496d60841afd98084128b6b1e8dc7127d312fcd91a988ce8f2b3053/cslab_etcd3-0.12.1.tar.gz";
    hash = "sha256-NsyVRCgGJkxGqJyqzrYEJ1HLwkbRuuppEAGTRNm+jkU=";
  };

  build-system = [ setuptools ];

  # its Requires-Dist (requirements/base.txt of the sdist)
  dependencies = [
    grpcio
    protobuf
    six
  ];

  # Its own tests need an etcd cluster started by pifpaf; nix-infra's tests run this
  # client against a real etcd (orchestrator/tests/test_etcd.py).
  doCheck = false;
  pythonImportsCheck = [ "etcd3" ];

  meta = {
    description = "Python client for the etcd v3 API (cslab fork of python-etcd3)";
    homepage = "https://github.com/reggiepy/python-etcd3";
    license = lib.licenses.asl20;
  };
}
