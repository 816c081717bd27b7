# VM test "credentials": a secret delivered the way the orchestrator does it
# (its own deliver-credentials script, value on stdin, systemd-creds encrypt)
# is readable by the service that loads it (LoadCredentialEncrypted=) and by
# no other user; the file on disk is root-only and not the value; an unchanged
# re-delivery keeps the file; a credential no longer listed is removed.
{ pkgs, self, disko }:
let
  deliver = ../orchestrator/nix_infra/data/deliver-credentials.sh;
in
pkgs.testers.runNixOSTest {
  name = "nix-infra-credentials";
  nodes.machine = { ... }: {
    users.users.alice = { isNormalUser = true; };
    systemd.services.reader = {
      serviceConfig = {
        DynamicUser = true;
        LoadCredentialEncrypted = [ "api-token:/var/lib/nix-infra/credentials/api-token.cred" ];
        ExecStart = "${pkgs.bash}/bin/bash -c 'cat $CREDENTIALS_DIRECTORY/api-token > /run/reader/seen; sleep infinity'";
        RuntimeDirectory = "reader";
      };
    };
  };
  testScript = ''
    machine.wait_for_unit("multi-user.target")
    frames = "printf 'put api-token 12\\ns3cret-value'; printf 'put stale 1\\nx'; printf 'keep api-token stale\\n'"
    out = machine.succeed(f"({frames}) | bash ${deliver}")
    assert "changed api-token" in out, out

    with subtest("the service that loads it reads the value"):
        machine.succeed("systemctl start reader.service")
        machine.wait_until_succeeds("test -s /run/reader/seen")
        assert machine.succeed("cat /run/reader/seen") == "s3cret-value"

    with subtest("nobody else can"):
        machine.succeed("test \"$(stat -c %a /var/lib/nix-infra/credentials)\" = 700")
        machine.succeed("test \"$(stat -c %a /var/lib/nix-infra/credentials/api-token.cred)\" = 600")
        machine.fail("su alice -c 'cat /var/lib/nix-infra/credentials/api-token.cred'")
        machine.fail("su alice -c 'cat /run/credentials/reader.service/api-token'")
        machine.fail("grep -rq s3cret-value /var/lib/nix-infra/credentials")

    with subtest("an unchanged value keeps its file; a dropped one is removed"):
        before = machine.succeed("stat -c %Y.%i /var/lib/nix-infra/credentials/api-token.cred")
        out = machine.succeed("(printf 'put api-token 12\\ns3cret-value'; printf 'keep api-token\\n') | bash ${deliver}")
        assert "unchanged api-token" in out and "removed stale" in out, out
        assert machine.succeed("stat -c %Y.%i /var/lib/nix-infra/credentials/api-token.cred") == before
        machine.fail("test -e /var/lib/nix-infra/credentials/stale.cred")
  '';
}
