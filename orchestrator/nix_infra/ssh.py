"""SSH to nodes, always with pinned host keys.

Every connection, by OpenSSH or by Nix (NIX_SSHOPTS), uses the cluster's own
known_hosts (facts/known_hosts) with StrictHostKeyChecking=yes; the user's
~/.ssh/known_hosts and the global one are never read or written, and no ssh_config
but our own is read (`-F none`, or `-F` a generated file for Nix), so nothing in
the operator's ~/.ssh/config (ForwardAgent, KnownHostsCommand, ProxyCommand,
ProxyJump, Host * ...) changes what nix-infra does. One
connection per command (ControlMaster=no): a confirmation must travel over a
fresh connection, and shared masters are known to hang `nix copy` (reported with deploy-rs).
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nix_infra.errors import NixInfraError
from nix_infra.process import Result, command_failed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SshTarget:
    """How to reach one node."""

    node: str
    host: str
    known_hosts: Path
    port: int = 22
    user: str = "root"
    identity: Path | None = None
    connect_timeout: int = 10

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    def known_hosts_name(self) -> str:
        """How known_hosts names this host: `host`, or `[host]:port` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _config_path(path: Path) -> str:
    """A path as an ssh_config value: absolute, `%` escaped (ssh expands %-tokens in these paths), in
    double quotes (ssh_config splits values on white space otherwise). Raises NixInfraError for a path
    ssh_config cannot express (a double quote or a line break in it)."""
    text = str(path.absolute())
    if any(c in text for c in '"\n\r'):
        raise NixInfraError(f"{text!r}: ssh cannot be given a path with a double quote or line break in it")
    return '"' + text.replace("%", "%%") + '"'


@functools.cache
def identity_needs_agent(path: Path) -> bool:
    """Whether ssh can use the identity file `path` only through the operator's agent: a public key
    (the agent holds its private half) or a passphrase-protected private key (BatchMode never asks for
    the passphrase). False for an unencrypted private key, and for a file that cannot be read (ssh
    then reports it). Reads the file once per process."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    first = text.lstrip().split("\n", 1)[0]
    if first.startswith(("ssh-", "ecdsa-", "sk-")):
        return True
    if "ENCRYPTED" in text:  # PEM (Proc-Type: 4,ENCRYPTED) and PKCS#8 (BEGIN ENCRYPTED PRIVATE KEY)
        return True
    begin, end = "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"
    start = text.find(begin)
    stop = text.find(end, start + len(begin)) if start >= 0 else -1
    if stop < 0:
        return False
    try:
        blob = base64.b64decode("".join(text[start + len(begin) : stop].split()))
    except ValueError:
        return False
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic) or len(blob) < len(magic) + 4:
        return False
    size = int.from_bytes(blob[len(magic) : len(magic) + 4], "big")
    cipher = blob[len(magic) + 4 : len(magic) + 4 + size]
    return cipher != b"none"


def pinned_settings(t: SshTarget) -> list[tuple[str, str]]:
    """The ssh_config settings of every OpenSSH connection, as (keyword, value) pairs.

    Host keys pinned to the cluster's known_hosts alone (no KnownHostsCommand, no global file, no
    learning); no prompts; no shared masters; no proxies; no forwarding of any kind (the etcd
    tunnel is tunnel.py's, in process), the operator's agent and X11 least of all. With an
    identity (--ssh-key) only that key is offered, and the agent is not asked (IdentityAgent none)
    unless the key is one only the agent can use (identity_needs_agent); without one, ssh's
    default keys and the operator's agent are the identity source, as before.
    Combined with `-F none` (or a generated -F file holding only these), no ~/.ssh/config or
    /etc/ssh/ssh_config setting applies."""
    settings = [
        ("StrictHostKeyChecking", "yes"),
        ("UserKnownHostsFile", _config_path(t.known_hosts)),
        ("GlobalKnownHostsFile", "/dev/null"),
        ("KnownHostsCommand", "none"),
        ("UpdateHostKeys", "no"),
        ("BatchMode", "yes"),
        ("ConnectTimeout", str(t.connect_timeout)),
        ("ServerAliveInterval", "5"),
        ("ServerAliveCountMax", "3"),
        ("ControlMaster", "no"),
        ("ControlPath", "none"),
        ("ProxyCommand", "none"),
        ("ProxyJump", "none"),
        ("ForwardAgent", "no"),
        ("ForwardX11", "no"),
    ]
    settings.append(("ClearAllForwardings", "yes"))
    if t.identity is not None:
        settings += [("IdentityFile", _config_path(t.identity)), ("IdentitiesOnly", "yes")]
        if not identity_needs_agent(t.identity):
            settings.append(("IdentityAgent", "none"))
    return settings


def ssh_options(t: SshTarget, *, port: bool = True) -> list[str]:
    """`-F none` and the pinned settings as `-o KEY=VALUE` arguments (paths quoted for ssh, so one
    argument each even with spaces): the options of every OpenSSH command line."""
    opts = ["-F", "none"]
    for key, value in pinned_settings(t):
        opts += ["-o", f"{key}={value}"]
    if port:
        opts += ["-p", str(t.port)]
    return opts


def ssh_config_text(t: SshTarget) -> str:
    """An ssh_config file with the pinned settings, the user and the port: what `ssh -F FILE` reads
    instead of ~/.ssh/config (used where options travel split on white space, as in NIX_SSHOPTS)."""
    lines = [f"{key} {value}" for key, value in pinned_settings(t)]
    lines += [f"User {t.user}", f"Port {t.port}"]
    return "".join(line + "\n" for line in lines)


def _private_base() -> Path:
    """A base for private temporary directories whose path has no white space (NIX_SSHOPTS is split
    on it): $TMPDIR when it qualifies, else /tmp."""
    base = Path(tempfile.gettempdir())
    return base if not any(c.isspace() for c in str(base)) else Path("/tmp")


@contextmanager
def ssh_config_file(t: SshTarget) -> Iterator[Path]:
    """A generated ssh_config (ssh_config_text) in a private directory (0700, file 0600) whose path has
    no white space; removed on exit. Yields its path."""
    directory = Path(tempfile.mkdtemp(prefix="nix-infra-ssh-", dir=_private_base()))
    try:
        path = directory / "ssh_config"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(ssh_config_text(t))
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def ssh_argv(t: SshTarget, command: Sequence[str], *, tty: bool = False) -> list[str]:
    """`ssh ... root@host -- 'cmd args'`: the remote command is one shell-quoted string."""
    return ssh_script_argv(t, shlex.join(command) if command else "", tty=tty)


def ssh_script_argv(t: SshTarget, script: str, *, tty: bool = False) -> list[str]:
    """`ssh ... root@host -- SCRIPT`: the node's shell runs SCRIPT as written."""
    argv = ["ssh", *ssh_options(t), "-t" if tty else "-T", t.destination]
    if script:
        argv += ["--", script]
    return argv


def nix_sshopts(config: Path) -> str:
    """NIX_SSHOPTS for `nix copy --to ssh-ng://...`: `-F CONFIG` (ssh_config_file), since Nix splits
    NIX_SSHOPTS on white space, unquoted, and a quoted path cannot survive that. Raises NixInfraError
    when CONFIG's own path has white space (ssh_config_file never makes one)."""
    if any(c.isspace() for c in str(config)):
        raise NixInfraError(f"{str(config)!r}: Nix cannot pass a path with white space in NIX_SSHOPTS")
    return f"-F {config}"


def run_remote(
    t: SshTarget,
    command: Sequence[str],
    *,
    input_text: str | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> Result:
    """Run a command on a node (its words shell-quoted, as ssh_argv); its exit code is checked like
    any local command's. Over the node's session (nix_infra.session): one connection per run."""
    return run_remote_script(
        t,
        shlex.join(command),
        input_bytes=None if input_text is None else input_text.encode(),
        timeout=timeout,
        check=check,
        what=f"{t.node}: {shlex.join(command)}",
    )


def run_remote_commands(
    t: SshTarget, *commands: Sequence[str], timeout: float | None = None, check: bool = True
) -> Result:
    """Several commands in one round trip, each after the previous succeeded (`a && b`)."""
    script = " && ".join(shlex.join(c) for c in commands)
    return run_remote_script(t, script, timeout=timeout, check=check, what=f"{t.node}: {script[:200]}")


def run_remote_script(
    t: SshTarget,
    script: str,
    *,
    input_bytes: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
    what: str | None = None,
) -> Result:
    """The node's shell runs `script` as written, `input_bytes` on its stdin (never logged), over
    the node's session. Exit 255: the connection failed or dropped (the reason in stderr), as with
    OpenSSH. With `check`, a non-zero exit raises NixInfraError naming `what` (default: the node
    and the script's start) and the tail of stderr; after `timeout` seconds NixInfraError."""
    from nix_infra.session import SESSIONS

    label = what or f"{t.node}: {script[:200]}"
    log.debug("%s$ %s", f"{t.node} ", script[:2000])
    try:
        outcome = SESSIONS.execute(t, script, stdin=input_bytes, timeout=timeout)
    except TimeoutError as exc:
        raise NixInfraError(f"{label}: timed out after {timeout} s") from exc
    stdout = outcome.stdout.decode(errors="replace")
    stderr = outcome.stderr.decode(errors="replace")
    result = Result(("ssh", t.destination, script), outcome.returncode, stdout, stderr, outcome.stdout)
    if check and outcome.returncode != 0:
        raise command_failed(label, outcome.returncode, stderr)
    return result


def renew_session(t: SshTarget) -> None:
    """The node's next command opens a fresh connection (after a switch: magic rollback's proof)."""
    from nix_infra.session import SESSIONS

    SESSIONS.renew(t)
