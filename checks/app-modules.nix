# VM test "app-modules": the PostgreSQL and Valkey app modules on svc001 of
# the test cluster, their passwords delivered as credentials the way the
# orchestrator does. Proves: each listens on the private IP at the app's port;
# the password from the credential is accepted there and a wrong one refused;
# the password is in no file of the store or the unit.
{ pkgs, self, disko }:
let
  common = import ./common.nix { inherit pkgs self disko; };
  ip = common.cluster.nodes.svc001.privateIp;
in
pkgs.testers.runNixOSTest {
  name = "nix-infra-app-modules";
  nodes.svc001 = {
    imports = [
      (common.nodeModule "svc001")
      ./service-apps.nix
    ];
    environment.systemPackages = [ pkgs.postgresql_17 ];
  };
  testScript = common.pythonHelpers + ''
    svc001.wait_for_unit("multi-user.target")
    svc001.succeed(f"mkdir -p {CREDS} && chmod 0700 {CREDS}")
    for name, value in (("db-password", "pg-s3cret"), ("cache-password", "cache-s3cret")):
        svc001.succeed(f"printf %s {value} | systemd-creds encrypt --name={name} - {CREDS}/{name}.cred")
    svc001.succeed("systemctl restart postgresql.service redis-cache.service")
    svc001.wait_for_open_port(5432, "${ip}")
    svc001.wait_for_open_port(6379, "${ip}")

    with subtest("postgresql: the password from the credential, from the private network"):
        svc001.wait_until_succeeds("PGPASSWORD=pg-s3cret psql -h ${ip} -U app -d app -c 'select 1'", timeout=60)
        svc001.fail("PGPASSWORD=wrong psql -h ${ip} -U app -d app -c 'select 1'")

    with subtest("valkey: AUTH with the password from the credential"):
        assert "PONG" in svc001.succeed("valkey-cli -h ${ip} -p 6379 -a cache-s3cret --no-auth-warning ping")
        assert "NOAUTH" in svc001.succeed("valkey-cli -h ${ip} -p 6379 ping 2>&1 || true")

    with subtest("the passwords are in no store path"):
        svc001.fail("grep -rlF pg-s3cret /nix/store/*-unit-* /etc/systemd 2>/dev/null")
        svc001.fail("grep -rlF cache-s3cret /nix/store/*-unit-* /etc/systemd 2>/dev/null")
  '';
}
