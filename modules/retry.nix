# How nix-infra's units retry a failed start: every 5 s at first, backing off to
# 5 minutes (systemd >= 254), with no start limit (set startLimitIntervalSec = 0
# beside it). Used for units that fail until the orchestrator delivered their
# credentials or until the private address is up, so a fresh node comes up by
# itself, and a permanently broken unit (e.g. an image that cannot be pulled)
# costs a try every 5 minutes, not every 5 seconds.
{ lib }:
{
  retried = {
    Restart = lib.mkDefault "on-failure";
    RestartSec = lib.mkDefault "5s";
    RestartSteps = lib.mkDefault 10;
    RestartMaxDelaySec = lib.mkDefault "5min";
  };
}
