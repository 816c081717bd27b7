"""A local fleet of fake servers: the sandbox's servers and the end-to-end tests' (one implementation).

Each fake server is a real sshd in its own mount namespace, with its own /nix
(a separate Nix store), its own /run and /etc/passwd, listening on its own
loopback address 127.X.Y.N:2222 (a random /24 per fleet, so parallel runs never
meet). Servers come to life when the fake Hetzner API finishes creating
them (FakeHcloud hooks): the SSH host key is the one the orchestrator put into
the server's cloud-init user_data, the authorized keys are the server's SSH
keys. What only a real NixOS has is stood in for, minimally, by scripts on the
server's PATH:

  systemd-run  runs the command after `--` detached (setsid), as a transient
               unit would, and records its argv in /run/fake/systemd-run.log
               and its process group in /run/fake/transient/UNIT (`systemctl
               stop UNIT` sends that group SIGTERM, as systemd does)
  systemctl    models the units a test system defines (its `units` file: each
               unit and the credentials it loads, LoadCredentialEncrypted=):
               state in /run/fake/units/U (active, failed, inactive); `start`
               and `restart` make U active when every credential it loads is
               in /var/lib/nix-infra/credentials and decrypts (real
               systemd-creds), else failed (exit 1, as systemd); `try-restart`
               restarts active units only; `reset-failed` makes failed units
               inactive; `show --property=LoadState --value` is loaded or
               not-found. Units no test system defines (sshd, flannel...)
               count as active unless listed in /run/fake/failed-units.
               `is-system-running` prints /run/fake/system-state, else
               degraded while a unit has failed, else running. Options come
               before `--`; an unknown option (a unit name starting with '-'
               without `--`) is an error, as in systemctl. Every call is
               logged in /run/fake/systemctl.log, restarts in /run/fake/restarted.

  nix-daemon   the real one, but while /run/fake/drop-copies holds a count > 0
               it kills the connection shortly after it starts (SSH dropped
               mid-copy), counting down

Tests flip those files to make a node degraded or a unit fail.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SSH_PORT = 2222

SYSTEMD_RUN = """#!/bin/sh
# stand-in for systemd-run: run the command after "--" detached, like a transient unit; its
# process group is recorded under /run/fake/transient/UNIT for `systemctl stop`
echo "$*" >> /run/fake/systemd-run.log
unit=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in --unit=*) unit=${1#--unit=} ;; esac
  shift
done
shift
setsid "$@" >> /run/fake/units.log 2>&1 < /dev/null &
if [ -n "$unit" ]; then mkdir -p /run/fake/transient && echo $! > "/run/fake/transient/$unit"; fi
"""

SYSTEMCTL = r"""#!/bin/bash
# stand-in for systemctl (see fleet.py's header): units, their states and their credentials
echo "$*" >> /run/fake/systemctl.log
units=/run/fake/units creds=/run/fake/unit-credentials
verb=$1; shift
quiet= property= args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; args+=("$@"); break ;;
    --quiet|-q|--value|--no-legend|--plain|--failed) [ "$1" = --quiet ] || [ "$1" = -q ] && quiet=1; shift ;;
    --property=*) property=${1#--property=}; shift ;;
    -*) echo "systemctl: unrecognized option '$1'" >&2; exit 1 ;;
    *) args+=("$1"); shift ;;
  esac
done
state() {  # the state of a unit: a defined one's file, else active unless listed as failed
  if grep -qx "$1" /run/fake/failed-units 2>/dev/null; then echo failed
  elif [ -f "$units/$1" ]; then cat "$units/$1"
  else echo active; fi
}
start() {  # a defined unit starts when each credential it loads is there and decrypts
  local u=$1 c
  [ -f "$units/$u" ] || { echo "Failed to start $u: Unit $u not found." >&2; return 5; }
  while read -r c; do
    [ -n "$c" ] || continue
    if ! systemd-creds decrypt --name="$c" "/var/lib/nix-infra/credentials/$c.cred" - >/dev/null 2>&1; then
      echo failed > "$units/$u"
      echo "Job for $u failed because the control process exited with error code." >&2
      return 1
    fi
  done < <(cat "$creds/$u" 2>/dev/null)
  echo active > "$units/$u"
}
case "$verb" in
  is-system-running)
    if [ -f /run/fake/system-state ]; then s=$(cat /run/fake/system-state)
    elif [ -s /run/fake/failed-units ] || grep -qsx failed "$units"/* 2>/dev/null; then s=degraded
    else s=running; fi
    echo "$s"
    [ "$s" = running ] ;;
  is-active)
    rc=0
    for u in "${args[@]}"; do
      s=$(state "$u"); [ -n "$quiet" ] || echo "$s"; [ "$s" = active ] || rc=3
    done
    exit $rc ;;
  show)
    [ "$property" = LoadState ] || { echo "fake systemctl: show --property=$property" >&2; exit 1; }
    for u in "${args[@]}"; do if [ -f "$units/$u" ]; then echo loaded; else echo not-found; fi; done ;;
  start|restart|try-restart)
    echo "${args[*]}" >> /run/fake/restarted
    rc=0
    for u in "${args[@]}"; do
      if [ "$verb" = try-restart ]; then [ "$(state "$u")" = active ] && [ -f "$units/$u" ] || continue; fi
      if [ -f "$units/$u" ]; then start "$u" || rc=$?
      elif [ "$verb" != try-restart ]; then echo "Failed to $verb $u: Unit $u not found." >&2; rc=5; fi
    done
    exit $rc ;;
  stop)  # a transient unit (systemd-run): SIGTERM to its process group, as systemd does
    rc=0
    for u in "${args[@]}"; do
      if [ -f "/run/fake/transient/$u" ]; then
        kill -TERM -- "-$(cat "/run/fake/transient/$u")" 2>/dev/null || true
        rm -f "/run/fake/transient/$u"
      elif [ -f "$units/$u" ]; then echo inactive > "$units/$u"
      else echo "Failed to stop $u: Unit $u not loaded." >&2; rc=5; fi
    done
    exit $rc ;;
  reset-failed)
    for u in "${args[@]}"; do
      [ "$(state "$u")" != failed ] || [ ! -f "$units/$u" ] || echo inactive > "$units/$u"
    done ;;
  list-units)
    { cat /run/fake/failed-units 2>/dev/null; grep -lsx failed "$units"/* 2>/dev/null | sed 's|.*/||'; } \
      | sed 's/$/ loaded failed failed/' ;;
  *) echo "fake systemctl: $verb $*" >&2; exit 1 ;;
esac
"""


NIX_DAEMON = """#!/bin/sh
# wraps the real nix-daemon; drops connections while /run/fake/drop-copies counts down
n=$(cat /run/fake/drop-copies 2>/dev/null || echo 0)
if [ "$n" -gt 0 ]; then
  echo $((n - 1)) > /run/fake/drop-copies
  /usr/bin/nix-daemon "$@" & pid=$!
  sleep 0.1; kill -9 "$pid"; exit 1
fi
exec /usr/bin/nix-daemon "$@"
"""


NIXOS_ANYWHERE = """#!/bin/sh
# Stand-in for nixos-anywhere on the operator's side of the local fleet. Like the
# real one it connects with its own insecure defaults first and the user's
# --ssh-option values after them (so only nix-infra's ssh wrapper keeps host keys
# pinned); then it "installs": the node's host key becomes the one passed with
# --extra-files, and its sshd reloads (SIGHUP), as a reboot into NixOS would.
set -eu
echo "$*" >> "$FAKE_FLEET_ROOT/nixos-anywhere.log"
extra= target= port=22 ident= opts= flake=
while [ $# -gt 0 ]; do
  case "$1" in
    --extra-files) extra=$2; shift 2 ;;
    --target-host) target=$2; shift 2 ;;
    -p|--ssh-port) port=$2; shift 2 ;;
    -i) ident=$2; shift 2 ;;
    --ssh-option) opts="$opts -o $2"; shift 2 ;;
    --flake) flake=$2; shift 2 ;;
    *) echo "nixos-anywhere stand-in: unexpected $1" >&2; exit 2 ;;
  esac
done
ssh -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no $opts ${ident:+-i "$ident"} -p "$port" "$target" \
  'echo kexec-and-install' >/dev/null
root=$(readlink -f "$FAKE_FLEET_ROOT/by-ip/${target#*@}")
cp "$extra/etc/ssh/ssh_host_ed25519_key" "$root/etc/host_key"
cp "$extra/etc/ssh/ssh_host_ed25519_key.pub" "$root/etc/host_key.pub"
kill -HUP "$(cat "$root/run/sshd.pid")"
# With FAKE_INSTALL_PAUSE set, it pauses here (a kill-point test stops the CLI meanwhile)
[ -z "${FAKE_INSTALL_PAUSE:-}" ] || sleep "$FAKE_INSTALL_PAUSE"
# With FAKE_INSTALL_SYSTEM set, it installs and "boots" the node's full system as the real one
# does: built here, copied into the node's store, running; every unit that loads a credential
# failed at boot, since no credential exists yet on a new server.
if [ -n "${FAKE_INSTALL_SYSTEM:-}" ]; then
  nix() { command nix --extra-experimental-features 'nix-command flakes' "$@"; }
  attr="${flake%#*}#nixosConfigurations.${flake##*#}.config.system.build.toplevel"
  nix build --no-link "$attr"
  system=$(nix eval --raw "$attr.outPath")
  nix copy --no-check-sigs --to "local?root=$root" "$system"
  ln -sfn "$system" "$root/run/current-system"
  mkdir -p "$root/run/fake/units" "$root/run/fake/unit-credentials"
  while read -r unit cred; do
    echo failed > "$root/run/fake/units/$unit"
    echo "$cred" >> "$root/run/fake/unit-credentials/$unit"
  done < "$system/units"
fi
"""


def install_stand_ins(bin_dir: Path) -> Path:
    """Operator-side stand-ins (nixos-anywhere) in `bin_dir`, to put first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "nixos-anywhere").write_text(NIXOS_ANYWHERE)
    (bin_dir / "nixos-anywhere").chmod(0o755)
    return bin_dir


def _wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"sshd on {host}:{port} did not start")


def q(path: Path) -> str:
    return shlex.quote(str(path))


def host_key_from_user_data(user_data: str | None) -> tuple[str, str]:
    """The ed25519 host key pair from cloud-init user_data (JSON is YAML)."""
    if not user_data or not user_data.startswith("#cloud-config\n"):
        raise ValueError("fake server: no #cloud-config user_data with ssh_keys")
    keys = json.loads(user_data.split("\n", 1)[1])["ssh_keys"]
    return keys["ed25519_private"], keys["ed25519_public"]


@dataclass
class FakeServer:
    name: str
    ip: str
    root: Path
    port: int
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            stdout=open(self.root / "sshd.log", "ab"),  # noqa: SIM115 - the process owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_listening(self.ip, self.port)
        time.sleep(0.05)
        if self.process.poll() is not None:  # somebody else listens there: this sshd could not bind
            raise RuntimeError(f"sshd for {self.name} exited: {(self.root / 'sshd.log').read_text()}")

    @property
    def store(self) -> Path:
        return self.root / "nix" / "store"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def fake_file(self, name: str) -> Path:
        return self.run_dir / "fake" / name

    def accepted_connections(self) -> int:
        """SSH connections this server's sshd accepted so far (its log, sshd.log): each one cost a
        key exchange. The benchmark and the tests count them per step."""
        log = self.root / "sshd.log"
        return log.read_text(errors="replace").count("Accepted publickey for ") if log.exists() else 0

    def current_system(self) -> str | None:
        link = self.run_dir / "current-system"
        return os.readlink(link) if link.is_symlink() else None

    def activations(self) -> list[str]:
        log = self.fake_file("activations")
        return log.read_text().split() if log.exists() else []

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self._kill_namespace()
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def _kill_namespace(self) -> None:
        """Detached activations (setsid) live on in the server's mount namespace: end them too."""
        assert self.process is not None
        kill_namespace(self.process.pid)


def kill_namespace(pid: int) -> None:
    """SIGKILL every process in the mount namespace of `pid` (a fake server's sshd), except `pid`."""
    try:
        ns = os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return
    if ns == os.readlink("/proc/self/ns/mnt"):  # not a namespace of its own: never kill our own
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == pid:
            continue
        try:
            if os.readlink(entry / "ns" / "mnt") == ns:
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue


@dataclass
class FakeFleet:
    """Implements FakeHcloud's ServerHooks with real sshd processes."""

    root: Path
    port: int = SSH_PORT
    servers: dict[str, FakeServer] = field(default_factory=dict)
    # a /24 of its own inside 127.0.0.0/8, so fleets of parallel test runs never meet
    prefix: str = field(default_factory=lambda: f"127.{random.randint(1, 254)}.{random.randint(0, 255)}")
    _next: int = 10

    def allocate_ipv4(self, server_id: int) -> str:
        self._next += 1
        if self._next > 254:
            raise RuntimeError("the fleet has room for 244 servers")
        return f"{self.prefix}.{self._next}"

    def boot(self, server: dict[str, Any], authorized_keys: list[str], user_data: str | None) -> None:
        private, public = host_key_from_user_data(user_data)
        name, ip = server["name"], server["public_net"]["ipv4"]["ip"]
        root = self.root / name
        shutil.rmtree(root, ignore_errors=True)
        for d in ("nix/store", "nix/var", "run/sshd", "run/fake", "bin", "etc", "var-lib-nix-infra", "etc-nix-infra"):
            (root / d).mkdir(parents=True)
        # the mount point of each node's own /var/lib/nix-infra (credentials); empty on the host
        # and of its /etc/nix-infra (app action scripts)
        Path("/var/lib/nix-infra").mkdir(parents=True, exist_ok=True)
        Path("/etc/nix-infra").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "host_key").write_text(private)
        (root / "etc" / "host_key").chmod(0o600)
        (root / "etc" / "host_key.pub").write_text(public + "\n")
        (root / "etc" / "bootstrap_key.pub").write_text(public + "\n")
        (root / "etc" / "authorized_keys").write_text("".join(k + "\n" for k in authorized_keys))
        for tool, text in (("systemd-run", SYSTEMD_RUN), ("systemctl", SYSTEMCTL), ("nix-daemon", NIX_DAEMON)):
            (root / "bin" / tool).write_text(text)
            (root / "bin" / tool).chmod(0o755)
        config = root / "etc" / "sshd_config"
        config.write_text(
            f"ListenAddress {ip}:{self.port}\n"
            f"HostKey {root}/etc/host_key\n"
            f"AuthorizedKeysFile {root}/etc/authorized_keys\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PidFile /run/sshd.pid\nStrictModes no\nUsePAM no\nMaxStartups 100\n"
            # an SFTP server, as a Hetzner Storage Box is (the backup drill's repository)
            "Subsystem sftp internal-sftp\n"
            f"SetEnv PATH={root}/bin:/usr/bin:/bin:/usr/sbin:/sbin\n"
            # Every fake node's sshd shares this machine's CPU; the post-quantum key exchange
            # (sntrup761, OpenSSH's default) costs ~0.1 s of CPU per side per connection,
            # which real nodes pay on their own CPUs. The fleet offers curve25519 only.
            "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org\n"
        )
        # root's login shell becomes /bin/sh in here: the host's ~/.bashrc (slow tool
        # set-ups) must not run on every SSH command
        passwd = "".join(
            ":".join([*line.split(":")[:6], "/bin/sh"]) + "\n" if line.startswith("root:") else line + "\n"
            for line in Path("/etc/passwd").read_text().splitlines()
        )
        (root / "etc" / "passwd").write_text(passwd)
        script = (
            f"mount --bind {q(root / 'nix')} /nix && mount --bind {q(root / 'run')} /run && "
            f"mount --bind {q(root / 'etc/passwd')} /etc/passwd && "
            f"mount --bind {q(root / 'var-lib-nix-infra')} /var/lib/nix-infra && "
            f"mount --bind {q(root / 'etc-nix-infra')} /etc/nix-infra && exec /usr/sbin/sshd -D -e -f {q(config)}"
        )
        fake = FakeServer(
            name=name,
            ip=ip,
            root=root,
            port=self.port,
            argv=["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        )
        self.servers[name] = fake
        by_ip = self.root / "by-ip"
        by_ip.mkdir(exist_ok=True)
        (by_ip / ip).unlink(missing_ok=True)
        (by_ip / ip).symlink_to(root)
        fake.start()

    def delete(self, server: dict[str, Any]) -> None:
        fake = self.servers.pop(server["name"], None)
        if fake:
            fake.stop()

    def stop_all(self) -> None:
        for fake in self.servers.values():
            fake.stop()
        self.servers.clear()


# ---- a cluster flake whose systems are small test derivations ----------------------------------

SWITCH = r"""#!/bin/sh
# test system: records its activation; fails, hangs, breaks SSH or drops the SSH sessions when told to
self=$(dirname "$(dirname "$(readlink -f "$0")")")
mkdir -p /run/fake
for what in hang fail break-ssh drop-sessions; do
  if [ -e "/run/fake/$what" ] && grep -qx "$self" "/run/fake/$what"; then eval "mode=$what"; fi
done
case "${mode:-}" in
  hang) sleep 3600 ;;
  fail) echo "switch-to-configuration: activation script failed" >&2; exit 1 ;;
  break-ssh) kill -STOP "$(cat /run/sshd.pid)" ;;
  drop-sessions) pkill -KILL -P "$(cat /run/sshd.pid)" || true ;;  # a network restart cuts every connection
  *) kill -CONT "$(cat /run/sshd.pid)" 2>/dev/null || true ;;
esac
if [ -e "$self/fail-activation" ]; then  # a sandbox fault (faults.nix): this system's activation fails
  echo "switch-to-configuration: activation script failed (a fault the sandbox was told to inject)" >&2; exit 1
fi
echo "$self" >> /run/fake/activations
ln -sfn "$self" /run/current-system
# the system's units (each with the credentials it loads): a unit new to the node is defined
# and started, as switch-to-configuration starts new units; known ones are left as they are
mkdir -p /run/fake/units /run/fake/unit-credentials
new=""
while read -r unit cred; do
  [ -e "/run/fake/units/$unit" ] || { echo inactive > "/run/fake/units/$unit"; new="$new $unit"; }
  grep -qsx "$cred" "/run/fake/unit-credentials/$unit" || echo "$cred" >> "/run/fake/unit-credentials/$unit"
done < "$self/units"
for unit in $new; do systemctl start -- "$unit" || true; done
"""

FLAKE = """{
  outputs = { self }:
    let
      cluster = (import ./lib).evalCluster (import ./cluster.nix);
      manifest = import ./manifest-override.nix cluster.manifest;
      # "UNIT CREDENTIAL" lines: what each unit of the node loads (LoadCredentialEncrypted=)
      unitLines = name: builtins.concatStringsSep "" (builtins.concatLists (builtins.attrValues (builtins.mapAttrs
        (cred: units: map (u: "${u} ${cred}\n") units) manifest.nodes.${name}.credentialUnits)));
      generation = import ./generation.nix;
      # the sandbox's fault knob: nodes whose system's activation fails ({ NODE = "fail-activation"; })
      faults = if builtins.pathExists ./faults.nix then import ./faults.nix else { };
      mkSystem = name: derivation ({
        name = "nixos-system-${name}-g${toString generation}";
        system = "%(system)s";
        builder = "/bin/sh";
        PATH = "/usr/bin:/bin";
        switch = builtins.readFile ./switch.sh;
        units = unitLines name;
        # the node's manifest entry: a change to the node in cluster.nix is a new system
        node = builtins.toJSON manifest.nodes.${name};
        args = [ "-c" ''
          mkdir -p $out/bin
          printf '%%s' "$switch" > $out/bin/switch-to-configuration
          chmod +x $out/bin/switch-to-configuration
          printf '%%s' "$units" > $out/units
          printf '%%s' "$node" > $out/node.json
          if [ -n "''${fail:-}" ]; then echo "$fail" > $out/fail-activation; fi
        '' ];
      } // (if faults ? ${name} then { fail = faults.${name}; } else { }));
    in {
      nixInfra.manifest = manifest;
      nixosConfigurations = builtins.mapAttrs
        (name: _: { config.system.build.toplevel = mkSystem name; }) cluster.nodes;
    };
}
"""


def write_cluster_flake(directory: Path, repo: Path, spec: str, generation: int = 1) -> Path:
    """A cluster flake (no inputs) with the real lib and test systems; bump `generation` for new systems."""
    import platform

    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "lib").exists():
        shutil.copytree(repo / "lib", directory / "lib")
    arch = {"x86_64": "x86_64-linux", "aarch64": "aarch64-linux"}[platform.machine()]
    (directory / "flake.nix").write_text(FLAKE % {"system": arch})
    (directory / "switch.sh").write_text(SWITCH)
    (directory / "cluster.nix").write_text(spec)
    override = directory / "manifest-override.nix"
    if not override.exists():  # tests point the manifest at their own etcd port, say
        override.write_text("m: m\n")
    set_generation(directory, generation)
    return directory


def set_generation(directory: Path, generation: int) -> None:
    (directory / "generation.nix").write_text(f"{generation}\n")
