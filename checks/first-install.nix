# VM test "first-install": a node boots its full system before any credential
# exists (as after nixos-anywhere's first boot); the units that load
# credentials fail. One delivery the way the orchestrator does it (its own
# deliver-credentials script) and they end active, with no manual
# `systemctl reset-failed` or start: Valkey (its unit loads the password) and
# PostgreSQL's password unit are up afterwards, and the passwords work.
{ pkgs, self, disko }:
let
  common = import ./common.nix { inherit pkgs self disko; };
  deliver = ../orchestrator/nix_infra/data/deliver-credentials.sh;
  ip = common.cluster.nodes.svc001.privateIp;
in
pkgs.testers.runNixOSTest {
  name = "nix-infra-first-install";
  nodes.svc001 = {
    imports = [
      (common.nodeModule "svc001")
      ./service-apps.nix
    ];
    environment.systemPackages = [ pkgs.postgresql_17 pkgs.valkey ];
  };
  testScript = common.pythonHelpers + ''
    svc001.wait_for_unit("multi-user.target")

    with subtest("before delivery: the units that load a credential cannot start"):
        svc001.fail("systemctl is-active redis-cache.service")
        svc001.fail("systemctl is-active nix-infra-postgresql-password.service")

    with subtest("one delivery, as the orchestrator does it"):
        frames = "printf 'put db-password 9\\npg-s3cret'; printf 'put cache-password 12\\ncache-s3cret'; printf 'keep db-password cache-password\\n'"
        out = svc001.succeed(f"({frames}) | bash ${deliver}")
        assert "changed db-password" in out and "changed cache-password" in out, out

    with subtest("the units come up by themselves: retried, no start limit"):
        svc001.wait_for_unit("redis-cache.service", timeout=60)
        svc001.wait_for_unit("nix-infra-postgresql-password.service", timeout=60)
        svc001.wait_until_succeeds("PGPASSWORD=pg-s3cret psql -h ${ip} -U app -d app -c 'select 1'", timeout=60)
        assert "PONG" in svc001.succeed("valkey-cli -h ${ip} -p 6379 -a cache-s3cret --no-auth-warning ping")
  '';
}
