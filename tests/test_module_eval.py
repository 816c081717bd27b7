"""The module evaluation check (checks/module-eval): every node of every example
cluster through the real nixpkgs module system, with typed stand-ins of the
upstream options our modules use.

It needs a nixpkgs `lib` directory: set NIXPKGS_LIB (e.g. a checkout of
nix-community/nixpkgs.lib's lib/, or `<nixpkgs>/lib`); without it these tests
skip and say so. The GitHub workflow passes the locked nixpkgs' lib. Besides
the whole check, each defect kind the check was built for is provoked in a
copy of the repo and must be caught, and the fixes of issue 11 are asserted on
the evaluated systems.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from test_nixos_options_doc import doc_rows, expand

NIXPKGS_LIB = os.environ.get("NIXPKGS_LIB", "")
pytestmark = pytest.mark.skipif(
    not (NIXPKGS_LIB and (Path(NIXPKGS_LIB) / "default.nix").is_file()),
    reason="the module evaluation check needs NIXPKGS_LIB=<a nixpkgs lib directory>",
)
CHECK = "import ./checks/module-eval { }"
REGISTER = "${./scripts/register-instance.sh}"
VALKEY_UNIT = 'systemd.services."redis-${cfg.app}" = {'


def run_check(repo: Path, *targets: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(repo / "checks" / "module-eval" / "run"), *targets],
        env={**os.environ, "NIXPKGS_LIB": NIXPKGS_LIB},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == (
        0 if not (summary["errors"] or summary["failed_assertions"] or summary["warnings"]) else 1
    )
    return summary


def evaluate(expr: str) -> Any:
    """A Nix expression over the check `c` ((import ./checks/module-eval {}))."""
    proc = subprocess.run(
        [
            "nix-instantiate",
            "--eval",
            "--strict",
            "--json",
            "--expr",
            f"let c = import ./checks/module-eval {{ }}; in {expr}",
        ],
        cwd=REPO,
        env={**os.environ, "NIXPKGS_LIB": NIXPKGS_LIB},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def service(cluster: str, node: str, unit: str) -> dict[str, Any]:
    return evaluate(  # type: ignore[no-any-return]
        f'let s = c.clusters.{cluster}.nixosConfigurations.{node}.config.systemd.services."{unit}"; in '
        "{ inherit (s) serviceConfig after wants restartTriggers startLimitIntervalSec; }"
    )


def test_every_node_of_every_cluster_evaluates_cleanly() -> None:
    summary = run_check(REPO)
    assert summary["problems"] == {}
    assert (summary["errors"], summary["failed_assertions"], summary["warnings"]) == (0, 0, 0)
    # template, lib/example.nix, examples/full, checks/, every-type, and each
    # exported module alone (standalone: 12 modules)
    assert summary["clusters"] >= 6
    assert summary["nodes"] >= 35


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / name.decode()
        if src.is_file():
            dst = tmp_path / name.decode()
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for extra in ("checks/module-eval",):  # the check itself, committed or not yet
        shutil.copytree(REPO / extra, tmp_path / extra, dirs_exist_ok=True)
    return tmp_path


def mutate(repo: Path, path: str, old: str, new: str) -> None:
    file = repo / path
    text = file.read_text()
    assert old in text, f"{path} no longer contains {old!r}: update this test"
    file.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("path", "old", "new", "kind", "expect"),
    [
        # issue 11, 1: a path literal that does not resolve
        (
            "modules/apps.nix",
            "${./scripts/register-instance.sh}",
            "${../scripts/register-instance.sh}",
            "errors",
            "No such file",
        ),
        # a single-valued unit setting that upstream's unit also sets (review finding)
        ("modules/apps.nix", '[ "nix-infra-secrets/${name}" ]', '"nix-infra-secrets/${name}"', "errors", "conflicting"),
        # a credential the node is given that no unit loads
        (
            "modules/apps.nix",
            "LoadCredentialEncrypted = credentialLines a.secrets;\n            ExecStartPre",
            "ExecStartPre",
            "errors",
            "no unit loads it",
        ),
        # a Restart= value systemd does not know
        ("modules/retry.nix", 'mkDefault "on-failure"', 'mkDefault "on-fail"', "errors", "not of type"),
        # 6: ordered after network-online.target without wanting it
        ("modules/apps.nix", 'wants = [ "network-online.target" ];', "", "warnings", "network-online.target"),
        # 7: an option NixOS removed
        (
            "modules/base.nix",
            'services.journald.settings.Journal = {\n      SystemMaxUse = mkDefault "1G";',
            'services.journald.extraConfig = "SystemMaxUse=1G";\n    services.journald.settings.Journal = {',
            "failed_assertions",
            "journald.extraConfig",
        ),
        # a value of the wrong upstream type (unit names are checked as upstream does)
        (
            "modules/mesh.nix",
            'wantedBy = [ "multi-user.target" ];',
            'wantedBy = [ "multi-user" ];',
            "errors",
            "is not of type",
        ),
        # a fragment for a unit no module defines
        (
            "app_modules/valkey.nix",
            'systemd.services."redis-${cfg.app}" = {',
            'systemd.services."valkey-${cfg.app}" = {',
            "errors",
            "only a fragment",
        ),
    ],
)
def test_the_check_catches_each_kind_of_fault(
    repo_copy: Path, path: str, old: str, new: str, kind: str, expect: str
) -> None:
    mutate(repo_copy, path, old, new)
    summary = run_check(repo_copy, "full")
    assert summary[kind] > 0, summary
    assert expect in json.dumps(summary["problems"]), summary["problems"]


def test_the_check_catches_a_config_shaped_by_config(repo_copy: Path) -> None:
    # issue 11, 2: `config = mkMerge (mapAttrsToList (... mkIf (hosted name) ...) cfg)` recursed forever
    module = repo_copy / "app_modules/container.nix"
    text = module.read_text()
    head = text[: text.index("  config = {")].replace("hosted = lib.filterAttrs", "hostedApps = lib.filterAttrs")
    module.write_text(
        head
        + "  config = let hosted = name: config.nixInfra.apps ? ${name}; in\n"
        + "    lib.mkMerge (lib.mapAttrsToList (name: c: lib.mkIf (hosted name) {\n"
        + "      virtualisation.oci-containers.containers.${name}.cmd = c.cmd;\n"
        + "    }) cfg);\n}\n"
    )
    summary = run_check(repo_copy, "full/worker001")
    assert summary["errors"] == 1
    assert "infinite recursion" in json.dumps(summary["problems"])


def test_only_the_units_that_read_a_credential_load_it() -> None:
    # issue 11, 3: postgresql.service never reads db-password; loading it made it fail at boot
    pg = service("full", "svc001", "postgresql")
    assert "LoadCredentialEncrypted" not in pg["serviceConfig"]
    password = service("full", "svc001", "nix-infra-postgresql-password")
    assert password["serviceConfig"]["LoadCredentialEncrypted"] == [
        "db-password:/var/lib/nix-infra/credentials/db-password.cred"
    ]
    redis = service("full", "svc001", "redis-cache")
    assert redis["serviceConfig"]["LoadCredentialEncrypted"] == [
        "cache-password:/var/lib/nix-infra/credentials/cache-password.cred"
    ]
    api = service("full", "worker001", "podman-api")
    assert api["serviceConfig"]["LoadCredentialEncrypted"] == [
        "api-token:/var/lib/nix-infra/credentials/api-token.cred"
    ]


@pytest.mark.parametrize(
    ("node", "unit", "restart", "seconds", "limit"),
    [
        # ours: every 5 s backing off to 5 min, no start limit
        ("svc001", "redis-cache", "on-failure", "5s", 0),
        ("svc001", "nix-infra-postgresql-password", "on-failure", "5s", 0),
        ("registry001", "docker-registry", "on-failure", "5s", 0),
        ("worker001", "podman-api", "always", "5s", 0),
        # upstream's own policy already retries slower than the default start limit
        # (5 starts in 10 s) could trip: we leave it alone
        ("registry001", "nix-serve", "always", "5s", "<unset>"),
        ("ctrl001", "etcd", "always", "30s", "<unset>"),
        ("worker001", "flannel", "always", "10s", "<unset>"),
    ],
)
def test_units_that_wait_for_credentials_or_the_private_ip_recover_by_themselves(
    node: str, unit: str, restart: str, seconds: str, limit: int | str
) -> None:
    # issue 11, 4 and 8: retried, they come up once the credential is delivered or the
    # address is there; no start limit can leave them failed for good
    s = service("full", node, unit)
    assert (s["serviceConfig"]["Restart"], s["serviceConfig"]["RestartSec"]) == (restart, seconds)
    assert s["startLimitIntervalSec"] == limit
    if limit == 0:
        assert (s["serviceConfig"]["RestartSteps"], s["serviceConfig"]["RestartMaxDelaySec"]) == (10, "5min")


def test_services_may_bind_the_private_ip_before_dhcp_configured_it() -> None:
    # issue 11, 8: network.target does not wait for Hetzner's private interface
    for node in ("svc001", "registry001", "ctrl001"):
        sysctl = evaluate(f"c.clusters.full.nixosConfigurations.{node}.config.boot.kernel.sysctl")
        assert sysctl["net.ipv4.ip_nonlocal_bind"] == 1


def test_confd_restarts_when_its_template_resource_changes() -> None:
    # issue 11, 9: the resource carries haproxy's store path; confd reads it once
    resource = evaluate(
        'c.clusters.full.nixosConfigurations.worker001.config.environment.etc."nix-infra/confd/conf.d/mesh-haproxy.toml".text'
    )
    assert "/bin/haproxy -c -f" in resource
    assert resource in service("full", "worker001", "nix-infra-confd")["restartTriggers"]


def test_container_secrets_are_staged_for_the_containers_user() -> None:
    # issue 11, 10: root-only 0400 credentials were unreadable for a non-root USER
    node = "c.clusters.every-type.nixosConfigurations.worker001.config"
    container = evaluate(f'{node}.virtualisation.oci-containers.containers."app-orders"')
    assert container["user"] == "1000:1000"
    assert "/run/nix-infra-secrets/orders/orders-token:/run/secrets/orders-token:ro" in container["volumes"]
    assert "/var/lib/orders:/data" in container["volumes"]
    unit = service("every-type", "worker001", "podman-orders")["serviceConfig"]
    # beside upstream's own /run/<name> (a list: single values would conflict)
    # the container is app-<name>: upstream's /run/<container> never meets a service's directory
    assert unit["RuntimeDirectory"] == ["app-orders", "nix-infra-secrets/orders"]
    pre = evaluate(f'{node}.systemd.services."podman-orders".serviceConfig.ExecStartPre')
    assert any(p.endswith("-nix-infra-stage-secrets-orders") for p in pre), pre
    rules = evaluate(f"{node}.systemd.tmpfiles.rules")
    assert "d /var/lib/orders 0750 1000 1000 -" in rules


def test_docs_rows_are_the_stand_ins_options_from_the_same_file() -> None:
    declared: list[dict[str, str]] = evaluate("c.declared")
    by_path: dict[str, set[str]] = {}
    for d in declared:
        by_path.setdefault(d["option"], set()).add(d["file"])
    rows = doc_rows()
    assert rows
    wrong = []
    for option, file_cell, _ in rows:
        for full in expand(option.split(" ")[0]):
            segments = [s for s in full.split(".") if s]
            matches = [
                files
                for path, files in by_path.items()
                if all(
                    a.startswith("<") or b in ("<name>", "*") or a == b
                    for a, b in zip(segments, path.split("."), strict=False)
                )
                # a top-level option of one segment (fileSystems) declares its whole submodule
                and (len(path.split(".")) >= min(len(segments), 2) or path == segments[0])
            ]
            named = {f for files in matches for f in files}
            if not matches:
                wrong.append(f"{full}: declared by no stand-in in checks/module-eval/upstream.nix")
            elif not any(f in file_cell for f in named):
                wrong.append(f"{full}: the doc names {file_cell.strip()}, the stand-ins {sorted(named)}")
    assert not wrong, "docs/nixos-options.md disagrees with the stand-ins:\n" + "\n".join(wrong)


def test_each_exported_module_evaluates_alone() -> None:
    # issue 18: every nixosModules.<x> and appModules.<x> in a bare configuration
    modules = ["base", "hetzner", "ctrl", "mesh", "overlay", "apps", "ingress", "registry", "default"]
    apps = ["container", "postgresql", "valkey"]
    assert sorted(evaluate("builtins.attrNames c.clusters.standalone.nixosConfigurations")) == sorted(modules + apps)
    summary = run_check(REPO, "standalone")
    assert (summary["nodes"], summary["errors"], summary["failed_assertions"], summary["warnings"]) == (12, 0, 0, 0)


def test_a_module_that_reads_options_it_does_not_import_fails_alone(repo_copy: Path) -> None:
    mutate(repo_copy, "modules/mesh.nix", "imports = [ ./base.nix ./ctrl.nix ];", "imports = [ ];")
    summary = run_check(repo_copy, "standalone/mesh")
    assert summary["errors"] == 1
    assert "nixInfra.etcd' does not exist" in json.dumps(summary["problems"])


def test_a_cluster_flakes_checks_evaluate() -> None:
    # mkClusterFlake's checks.<system>: what the template's CI runs with `nix flake check`
    for cluster in ("template", "full", "every-type"):
        paths = evaluate(
            f"builtins.mapAttrs (_: d: d.outPath) c.clusters.{cluster}.checks.x86_64-linux",
        )
        assert sorted(paths) == ["lib-tests", "manifest-schema", "nodes-evaluate"]


def test_the_templates_app_module_acts_only_where_its_app_runs() -> None:
    nodes = "c.clusters.template.nixosConfigurations"
    worker = evaluate(f'{nodes}.worker001.config.environment.etc."nix-infra/actions/api/migrate".text')
    assert "podman exec app-api /app/migrate" in worker
    containers = f"{nodes}.worker001.config.virtualisation.oci-containers.containers"
    assert evaluate(f'{containers}."app-api".user') == "1000:1000"
    assert evaluate(f"{nodes}.ctrl001.config.virtualisation.oci-containers.containers") == {}
    assert not evaluate(f'{nodes}.ctrl001.config.environment.etc ? "nix-infra/actions/api/migrate"')


def test_docs_modules_page_is_generated_from_the_code() -> None:
    proc = subprocess.run(
        [str(REPO / "checks" / "module-eval" / "modules-doc")],
        env={**os.environ, "NIXPKGS_LIB": NIXPKGS_LIB},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (REPO / "docs" / "modules.md").read_text(), (
        "docs/modules.md is stale: run NIXPKGS_LIB=... checks/module-eval/modules-doc --write"
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("dataDir", '"/"'),
        ("dataDir", '"/etc"'),
        ("dataDir", '"/var/lib/../etc"'),
        ("dataDir", '"/var/lib/api/"'),
        ("dataDir", '"/nix/store/x"'),
        ("mountPath", '"/run/secrets/x"'),
        ("mountPath", '"/proc"'),
        ("mountPath", '"/data/../x"'),
        ("user", '"4294967295"'),
        ("user", '"0001"'),
        ("user", '"app"'),
    ],
)
def test_container_settings_that_would_harm_the_host_are_refused(repo_copy: Path, setting: str, value: str) -> None:
    # review finding: dataDir = "/" with a user chowned the host's root to the container
    old = 'user = "1000:1000";' if setting == "user" else 'dataDir = "/var/lib/orders";'
    mutate(repo_copy, "checks/module-eval/every-type.nix", old, f"{setting} = {value};")
    summary = run_check(repo_copy, "every-type/worker001")
    assert summary["errors"] == 1
    assert f"nixInfra.containerApps.orders.{setting}" in json.dumps(summary["problems"])


def test_a_volume_not_provisioned_yet_evaluates_and_its_apps_never_use_the_root_disk(repo_copy: Path) -> None:
    # a cluster repo's CI evaluates before provision recorded the volume's id: no mount
    # then, and the apps on it refuse to start rather than write to the root disk
    (repo_copy / "checks/module-eval/every-type-facts/svc001.json").unlink()
    summary = run_check(repo_copy, "every-type/svc001")
    assert (summary["errors"], summary["failed_assertions"], summary["warnings"]) == (0, 0, 0)
    unit = evaluate("c.clusters.every-type.nixosConfigurations.svc001.config.systemd.services.postgresql.unitConfig")
    assert unit["AssertPathIsMountPoint"] == "/srv/data"
    assert unit["RequiresMountsFor"] == ["/srv/data", "/var/lib/postgresql"]
