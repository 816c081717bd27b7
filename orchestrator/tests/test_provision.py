"""provision / plan / destroy through the CLI, against the fake Hetzner API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from nix_infra.fake_hcloud import FakeHcloud

from .conftest import example_manifest_data
from .conftest import run_cli as cli

SIXTY_ONE = (
    "let e = import ./lib/example.nix; in e // { nodes = e.nodes // builtins.listToAttrs"
    ' (builtins.genList (i: { name = "worker${toString (i + 100)}";'
    ' value = { type = "worker"; serverType = "cx22"; }; }) 60); }'
)


def servers_by_node(fake: FakeHcloud, cluster: str = "demo") -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for s in fake.snapshot()["servers"]:
        if s["labels"].get("nix-infra/cluster") == cluster:
            found.setdefault(s["labels"]["nix-infra/node"], []).append(s["name"])
    return found


@pytest.fixture
def big_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "big.json"
    path.write_text(json.dumps(example_manifest_data(SIXTY_ONE)))
    return path


def test_plan_provision_plan(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    code, out, _ = cli(capsys, "--manifest", str(manifest_file), "plan")
    assert code == 2
    for line in ["+ demo ", "+ demo-spread-1", "+ demo-ctrl ", "+ demo-worker ", "+ demo-ctrl001", "+ demo-worker001"]:
        assert line in out, line
    assert "Plan: 7 to create, 0 to update, 0 to delete." in out

    code, out, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 0, err
    assert "+ server demo-worker001 running, private IP 10.10.64.1" in err
    snap = fake.snapshot()
    assert {s["name"]: s["status"] for s in snap["servers"]} == {"demo-ctrl001": "running", "demo-worker001": "running"}
    assert {s["name"]: s["private_net"][0]["ip"] for s in snap["servers"]} == {
        "demo-ctrl001": "10.10.32.1",
        "demo-worker001": "10.10.64.1",
    }
    assert all(r["labels"]["nix-infra/cluster"] == "demo" for kind in snap if kind != "actions" for r in snap[kind])

    code, out, _ = cli(capsys, "--manifest", str(manifest_file), "plan")
    assert code == 0
    assert "No changes" in out
    code, out, _ = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert (code, out.strip()) == (0, "nothing to do")


def test_plan_json(capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path) -> None:
    code, out, _ = cli(capsys, "--manifest", str(manifest_file), "--json", "plan")
    assert code == 2
    data = json.loads(out)
    assert data["summary"] == {"create": 7, "update": 0, "delete": 0}
    assert [c["name"] for c in data["changes"] if c["kind"] == "server"] == ["demo-ctrl001", "demo-worker001"]


def test_sixty_servers_past_the_first_page(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], big_manifest: Path, fake: FakeHcloud
) -> None:
    code, _, err = cli(capsys, "--manifest", str(big_manifest), "--yes", "provision")
    assert code == 0, err
    by_node = servers_by_node(fake)
    assert len(by_node) == 62 and all(len(v) == 1 for v in by_node.values())
    groups = fake.snapshot()["placement_groups"]
    assert sorted(len(g["servers"]) for g in groups) == [2, 10, 10, 10, 10, 10, 10]
    code, out, _ = cli(capsys, "--manifest", str(big_manifest), "plan")
    assert code == 0, out  # every server found again: listing pages past 25 and 50 works


def test_rate_limit_bursts_are_waited_out(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    fake.set_faults(rate_limit_burst=2, rate_limit_reset_seconds=1)
    start = time.monotonic()
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 0, err
    assert time.monotonic() - start >= 1.0  # waited for RateLimit-Reset (>= 1 s each), not a tight loop
    assert fake.faults.rate_limit_burst == 0
    assert len(servers_by_node(fake)) == 2


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_storms_are_retried(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud, status: int
) -> None:
    fake.set_faults(server_errors=6, server_error_status=status)
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 0, err
    assert fake.faults.server_errors == 0
    assert len(servers_by_node(fake)) == 2


def test_endless_server_errors_give_up_with_the_code(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    fake.set_faults(server_errors=1000, server_error_status=503)
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 1
    assert "service_error" in err and "Traceback" not in err


def test_resource_limit_is_reported_with_the_resource(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    fake.set_faults(server_limit=1)
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 1
    assert "server demo-worker001: Hetzner API error resource_limit_exceeded: server limit exceeded" in err


def test_slow_actions_are_polled_to_completion(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    fake.set_faults(action_seconds=0.3)
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 0, err
    assert {s["status"] for s in fake.snapshot()["servers"]} == {"running"}


def test_action_timeout_names_the_resource(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    manifest_file: Path,
    fake: FakeHcloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NIX_INFRA_HCLOUD_ACTION_TIMEOUT", "0.3")
    fake.set_faults(action_seconds=30)
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 1
    assert "error: firewall demo-ctrl: Hetzner action apply_firewall did not finish in time" in err


def test_failing_action_is_reported_with_code_and_resource(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    fake.set_faults(fail_actions={"attach_to_network": ["server_error", "network attach broke"]})
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code != 0
    assert "server demo-ctrl001: Hetzner action attach_to_network failed: server_error: network attach broke" in err
    assert "server demo-worker001: Hetzner action attach_to_network failed" in err
    # once the fault clears, a re-run finishes the job
    fake.set_faults(fail_actions={})
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 0, err
    assert all(len(s["private_net"]) == 1 for s in fake.snapshot()["servers"])


@pytest.mark.parametrize("loses_response", [False, True])
def test_crash_half_way_then_rerun_finishes_without_duplicates(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    big_manifest: Path,
    fake: FakeHcloud,
    loses_response: bool,
) -> None:
    fake.set_faults(crash_after=40, crash_loses_response=loses_response)
    code, _, err = cli(capsys, "--manifest", str(big_manifest), "--yes", "provision")
    assert code == 1
    assert "cannot reach the Hetzner API" in err and "re-run to continue" in err
    created_before = len(servers_by_node(fake))
    assert 0 < created_before < 62
    fake.set_faults(crash_after=None)
    code, _, err = cli(capsys, "--manifest", str(big_manifest), "--yes", "provision")
    assert code == 0, err
    by_node = servers_by_node(fake)
    assert len(by_node) == 62 and all(len(v) == 1 for v in by_node.values())


def test_answer_lost_while_creating_a_server_is_adopted(
    hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud, client: Any
) -> None:
    """A server that appears between plan and create (an earlier answer got lost) is taken over."""
    from nix_infra.hetzner.apply import Applier
    from nix_infra.hetzner.model import desired_state, read_actual
    from nix_infra.hetzner.plan import plan
    from nix_infra.manifest import load_manifest_file

    desired = desired_state(load_manifest_file(manifest_file))
    p = plan(desired, read_actual(client, "demo"))
    ctrl = next(s for s in desired.servers if s.node == "ctrl001")
    with fake.lock:
        fake.state.create_server(
            {
                "name": ctrl.name,
                "server_type": ctrl.server_type,
                "image": ctrl.image,
                "location": ctrl.location,
                "labels": dict(ctrl.labels),
            }
        )
    Applier(client, desired, lambda _: None).apply(p)
    by_node = servers_by_node(fake)
    assert by_node == {"ctrl001": ["demo-ctrl001"], "worker001": ["demo-worker001"]}
    assert plan(desired, read_actual(client, "demo")).changes == ()


def test_missing_token_fails_fast_without_api_calls(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    manifest_file: Path,
    fake: FakeHcloud,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("HCLOUD_TOKEN")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "plan")
    assert code == 1
    assert "No Hetzner Cloud API token" in err and "HCLOUD_TOKEN" in err and ".env" in err
    assert fake.calls == []


def test_token_from_dotenv(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    manifest_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("HCLOUD_TOKEN")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("# cluster secrets\nexport HCLOUD_TOKEN='test-token'\n")
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "plan")
    assert code == 2, err


def test_rejected_token_changes_nothing(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    manifest_file: Path,
    fake: FakeHcloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HCLOUD_TOKEN", "revoked-token")
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 1
    assert "Hetzner rejected the API token (401 unauthorized)" in err
    assert "revoked-token" not in err
    assert {method for method, _ in fake.calls} == {"GET"}
    assert fake.snapshot()["servers"] == []


def test_never_touches_unlabelled_resources(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    with fake.lock:
        fake.state.create_server({"name": "demo-ctrl001", "server_type": "cx22", "image": "debian-12"})
        fake.state.create_firewall({"name": "demo-worker", "rules": []})
    before = fake.snapshot()
    code, out, _ = cli(capsys, "--manifest", str(manifest_file), "plan")
    assert code == 2
    assert "server demo-ctrl001: the name demo-ctrl001 is taken by a server not labelled" in out
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 1
    assert "problems that need a decision first" in err
    after = fake.snapshot()
    assert after["servers"] == before["servers"] and after["firewalls"] == before["firewalls"]


def test_provision_without_yes_and_no_terminal_refuses(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "provision")
    assert code == 1
    assert "pass --yes" in err
    assert fake.snapshot()["servers"] == []


def provisioned(capsys: pytest.CaptureFixture[str], manifest_file: Path) -> None:
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 0, err


def test_destroy_one_node(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    provisioned(capsys, manifest_file)
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "destroy", "worker001")
    assert code == 0, err
    assert list(servers_by_node(fake)) == ["ctrl001"]
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "destroy", "nosuch")
    assert code == 1 and "no server of cluster demo carries node nosuch" in err


def test_orphans_only_go_through_destroy(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    manifest_file: Path,
    fake: FakeHcloud,
    example_manifest: dict[str, Any],
    tmp_path: Path,
) -> None:
    provisioned(capsys, manifest_file)
    smaller = json.loads(json.dumps(example_manifest))
    del smaller["nodes"]["worker001"]
    # and everything that refers to it (the loader checks every reference)
    smaller["apps"], smaller["secrets"], smaller["waves"] = {}, [], [["ctrl001"]]
    smaller["etcdSeed"] = {k: v for k, v in smaller["etcdSeed"].items() if k == "/cluster/nodes/ctrl001"}
    path = tmp_path / "smaller.json"
    path.write_text(json.dumps(smaller))
    code, out, _ = cli(capsys, "--manifest", str(path), "plan")
    assert "! demo-worker001" in out and "only `nix-infra destroy NODE` deletes them" in out
    code, _, _ = cli(capsys, "--manifest", str(path), "--yes", "provision")
    assert "worker001" in servers_by_node(fake)
    code, _, _ = cli(capsys, "--manifest", str(path), "--yes", "destroy", "worker001")
    assert code == 0 and "worker001" not in servers_by_node(fake)


def test_destroy_all_needs_the_cluster_name(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    provisioned(capsys, manifest_file)
    with fake.lock:
        fake.state.create_server({"name": "someone-else", "server_type": "cx22", "image": "debian-12"})
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "destroy", "--all")
    assert code == 1 and "--confirm demo" in err
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "destroy", "--all", "--confirm", "dmeo")
    assert code == 1 and "does not match" in err
    assert len(servers_by_node(fake)) == 2
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "destroy", "--all", "--confirm", "demo")
    assert code == 0, err
    snap = fake.snapshot()
    assert [s["name"] for s in snap["servers"]] == ["someone-else"]
    assert snap["networks"] == snap["firewalls"] == snap["placement_groups"] == snap["ssh_keys"] == []


def test_destroy_needs_nodes_or_all(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path
) -> None:
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "destroy")
    assert code == 1 and "destroy NODE..." in err


@pytest.mark.parametrize("command", [[], ["plan"], ["provision"], ["destroy"], ["manifest"]])
def test_help_explains_with_examples(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, _ = cli(capsys, *command, "--help")
    assert code == 0
    assert "Examples:" in out
    assert "nix-infra" in out


def test_a_missing_pin_is_repaired_by_the_next_provision(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path
) -> None:
    """Facts with an address but no known_hosts line (a run cut off between the two writes)."""
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 0, err
    known_hosts = Path("facts") / "known_hosts"
    pinned = known_hosts.read_text()
    known_hosts.unlink()
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 0, err
    assert "~ known_hosts: pinned ctrl001" in err and "~ known_hosts: pinned worker001" in err
    assert known_hosts.read_text() == pinned
