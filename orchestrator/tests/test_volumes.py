"""Volumes and protection: the fake API's volumes through the real hcloud client, and
plan / provision / destroy of a cluster with a stateful node (issue 17, part A)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer

from nix_infra.fake_hcloud import FakeHcloud

from .conftest import example_manifest_data
from .conftest import run_cli as cli

STATEFUL = (
    "let e = import ./lib/example.nix; in e // {"
    ' nodes = e.nodes // { db001 = { type = "service"; serverType = "cx22";'
    ' volumes.pgdata = { size = 20; mountpoint = "/var/lib/postgresql"; }; }; };'
    ' apps = e.apps // { pg = { group = "services"; port = 5432; publish = 15432; nodes = [ "db001" ];'
    ' unit = "postgresql.service"; volume = "pgdata"; }; }; }'
)


@pytest.fixture(scope="module")
def stateful_manifest() -> dict[str, Any]:
    return example_manifest_data(STATEFUL)


@pytest.fixture
def db_manifest(tmp_path: Path, stateful_manifest: dict[str, Any]) -> Path:
    path = tmp_path / "stateful.json"
    path.write_text(json.dumps(stateful_manifest))
    return path


def with_size(path: Path, size: int) -> Path:
    data = json.loads(path.read_text())
    data["nodes"]["db001"]["volumes"]["pgdata"]["size"] = size
    out = path.with_name(f"size-{size}.json")
    out.write_text(json.dumps(data))
    return out


def volumes(fake: FakeHcloud) -> list[dict[str, Any]]:
    return [v for v in fake.snapshot()["volumes"] if v["labels"].get("nix-infra/cluster") == "demo"]


def server(fake: FakeHcloud, name: str) -> dict[str, Any]:
    [s] = [s for s in fake.snapshot()["servers"] if s["name"] == name]
    return s


def provision(capsys: pytest.CaptureFixture[str], manifest: Path) -> tuple[int, str, str]:
    return cli(capsys, "--manifest", str(manifest), "--yes", "provision")


# ---- the fake API, driven through the real hcloud client -----------------------------------------


def _server(client: Client, name: str, location: str = "fsn1") -> BoundServer:
    resp = client.servers.create(
        name=name, server_type=ServerType(name="cx22"), image=Image(name="debian-12"), location=Location(name=location)
    )
    resp.action.wait_until_finished()
    return resp.server


def _code(exc: pytest.ExceptionInfo[APIException]) -> str:
    return str(exc.value.code)


def test_fake_volumes_follow_the_api(client: Client) -> None:
    web = _server(client, "web", "fsn1")
    far = _server(client, "far", "hel1")
    resp = client.volumes.create(size=10, name="data", location=Location(name="fsn1"), automount=False, format="ext4")
    resp.action.wait_until_finished()
    vol = client.volumes.get_by_id(resp.volume.id or 0)
    assert (vol.size, vol.status, vol.format, vol.server) == (10, "available", "ext4", None)
    assert vol.linux_device == f"/dev/disk/by-id/scsi-0HC_Volume_{vol.id}"

    for size in (9, 10241):
        with pytest.raises(APIException) as bad:
            client.volumes.create(size=size, name=f"v{size}", location=Location(name="fsn1"))
        assert _code(bad) == "invalid_input" and "between 10 and 10240" in str(bad.value.message)
    with pytest.raises(APIException) as bad:
        client.volumes.attach(vol, far)
    assert _code(bad) == "invalid_input" and "same location" in str(bad.value.message)

    client.volumes.attach(vol, web, automount=False).wait_until_finished()
    assert client.volumes.get_by_id(vol.id or 0).server.id == web.id  # type: ignore[union-attr]
    assert client.servers.get_by_id(web.id or 0).volumes[0].id == vol.id  # type: ignore[index]
    with pytest.raises(APIException) as bad:
        client.volumes.attach(vol, web)
    assert _code(bad) == "volume_already_attached"
    with pytest.raises(APIException) as bad:
        client.volumes.delete(vol)
    assert _code(bad) == "resource_in_use"

    client.volumes.resize(vol, 15).wait_until_finished()
    assert client.volumes.get_by_id(vol.id or 0).size == 15
    with pytest.raises(APIException) as bad:
        client.volumes.resize(vol, 12)
    assert _code(bad) == "invalid_input" and "only grow" in str(bad.value.message)

    client.volumes.change_protection(vol, delete=True).wait_until_finished()
    client.volumes.detach(vol).wait_until_finished()
    with pytest.raises(APIException) as bad:
        client.volumes.delete(vol)
    assert _code(bad) == "protected"
    client.volumes.change_protection(vol, delete=False).wait_until_finished()
    assert client.volumes.delete(vol)
    assert client.volumes.get_all() == []


def test_fake_server_protection_and_delete_keeps_volumes(client: Client) -> None:
    web = _server(client, "web")
    with pytest.raises(APIException) as bad:
        client.servers.change_protection(web, delete=True, rebuild=False)
    assert _code(bad) == "invalid_input"
    client.servers.change_protection(web, delete=True, rebuild=True).wait_until_finished()
    assert client.servers.get_by_id(web.id or 0).protection == {"delete": True, "rebuild": True}
    with pytest.raises(APIException) as bad:
        client.servers.delete(web)
    assert _code(bad) == "protected"
    resp = client.volumes.create(size=10, name="data", server=web)
    for action in [resp.action, *resp.next_actions]:
        action.wait_until_finished()
    client.servers.change_protection(web, delete=False, rebuild=False).wait_until_finished()
    client.servers.delete(web).wait_until_finished()
    [vol] = client.volumes.get_all()
    assert vol.server is None and vol.size == 10  # detached, never deleted with the server


# ---- plan / provision ---------------------------------------------------------------------------


def test_plan_provision_a_volume_and_protection(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], db_manifest: Path, fake: FakeHcloud
) -> None:
    code, out, _ = cli(capsys, "--manifest", str(db_manifest), "plan")
    assert code == 2
    assert "+ demo-db001-pgdata  20 GB ext4 fsn1  attached to demo-db001  delete-protected" in out
    code, out, _ = cli(capsys, "--manifest", str(db_manifest), "--json", "plan")
    [create] = [c for c in json.loads(out)["changes"] if c["kind"] == "volume"]
    assert create["fields"]["labels"] == {
        "nix-infra/cluster": "demo",
        "nix-infra/node": "db001",
        "nix-infra/type": "service",
        "nix-infra/volume": "pgdata",
    }

    code, _, err = provision(capsys, db_manifest)
    assert code == 0, err
    [vol] = volumes(fake)
    db = server(fake, "demo-db001")
    assert (vol["name"], vol["size"], vol["location"]["name"], vol["server"]) == (
        "demo-db001-pgdata",
        20,
        "fsn1",
        db["id"],
    )
    assert vol["labels"]["nix-infra/volume"] == "pgdata" and vol["labels"]["nix-infra/node"] == "db001"
    assert vol["protection"] == {"delete": True}
    assert db["protection"] == {"delete": True, "rebuild": True}
    assert server(fake, "demo-worker001")["protection"] == {"delete": False, "rebuild": False}  # stateless
    facts = json.loads(Path("facts/db001.json").read_text())
    assert facts["volumes"] == {
        "pgdata": {"id": vol["id"], "linuxDevice": f"/dev/disk/by-id/scsi-0HC_Volume_{vol['id']}"}
    }
    assert "volumes" not in json.loads(Path("facts/worker001.json").read_text())

    code, out, _ = cli(capsys, "--manifest", str(db_manifest), "plan")
    assert code == 0 and "No changes" in out


def test_a_volume_grows_and_never_shrinks(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], db_manifest: Path, fake: FakeHcloud
) -> None:
    assert provision(capsys, db_manifest)[0] == 0
    bigger = with_size(db_manifest, 35)
    code, out, _ = cli(capsys, "--manifest", str(bigger), "plan")
    assert code == 2 and "~ demo-db001-pgdata  size: 20 -> 35" in out
    code, _, err = provision(capsys, bigger)
    assert code == 0, err
    assert [v["size"] for v in volumes(fake)] == [35]

    smaller = with_size(db_manifest, 30)
    code, out, _ = cli(capsys, "--manifest", str(smaller), "plan")
    assert code == 2
    assert "nodes.db001.volumes.pgdata.size: 30 GB is smaller than the volume's 35 GB" in out
    code, _, err = provision(capsys, smaller)
    assert code == 1 and "nodes.db001.volumes.pgdata.size: 30 GB is smaller" in err
    assert "Traceback" not in err
    assert [v["size"] for v in volumes(fake)] == [35]


def test_a_volume_in_another_location_or_on_another_server_is_a_problem(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    db_manifest: Path,
    fake: FakeHcloud,
    client: Client,
) -> None:
    labels = {"nix-infra/cluster": "demo", "nix-infra/node": "db001", "nix-infra/volume": "pgdata"}
    client.volumes.create(size=20, name="demo-db001-pgdata", location=Location(name="hel1"), labels=labels)
    code, out, _ = cli(capsys, "--manifest", str(db_manifest), "plan")
    assert code == 2 and "nodes.db001.volumes.pgdata: the volume is in hel1, node db001 in fsn1" in out
    code, _, err = provision(capsys, db_manifest)
    assert code == 1 and "cannot move" in err
    assert len(volumes(fake)) == 1


def test_kill_provision_mid_way_and_rerun_converges(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], db_manifest: Path, fake: FakeHcloud
) -> None:
    """Cut the API off at every request of the volume stage (the create's answer lost too):
    a re-run ends with exactly one volume, protected and attached, and its id in the facts."""
    assert provision(capsys, db_manifest)[0] == 0
    calls = list(fake.calls)
    first = next(i for i, (m, p) in enumerate(calls) if m == "POST" and p == "/v1/volumes")
    volume_stage = [i for i, (m, p) in enumerate(calls) if i >= first and p.startswith("/v1/volumes")]
    assert len(volume_stage) >= 3  # create, protect, attach
    for crash_at in volume_stage:
        fake.reset()
        fake.set_faults(crash_after=crash_at, crash_loses_response=True)
        code, _, err = provision(capsys, db_manifest)
        assert code == 1 and "Traceback" not in err, err
        assert fake.calls[crash_at] == calls[crash_at]  # cut off where meant
        fake.set_faults(crash_after=None)
        code, _, err = provision(capsys, db_manifest)
        assert code == 0, (crash_at, err)
        [vol] = volumes(fake)
        assert vol["protection"] == {"delete": True} and vol["server"] == server(fake, "demo-db001")["id"]
        assert json.loads(Path("facts/db001.json").read_text())["volumes"]["pgdata"]["id"] == vol["id"]
        code, out, _ = cli(capsys, "--manifest", str(db_manifest), "plan")
        assert code == 0, out


# ---- destroy ------------------------------------------------------------------------------------


def test_destroy_of_a_stateful_node_is_refused_without_the_flag(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], db_manifest: Path, fake: FakeHcloud
) -> None:
    assert provision(capsys, db_manifest)[0] == 0
    m = ["--manifest", str(db_manifest)]
    code, _, err = cli(capsys, *m, "--yes", "destroy", "db001")
    assert code == 1
    assert "DATA LOSS: destroys node db001's disk" in err  # the plan marks it
    assert "refused" in err and "--allow-data-loss" in err and "--confirm db001" in err
    code, _, err = cli(capsys, *m, "--yes", "destroy", "db001", "--allow-data-loss")
    assert code == 1 and "pass --confirm db001" in err  # --yes is not the node's name
    code, _, err = cli(capsys, *m, "destroy", "db001", "--allow-data-loss", "--confirm", "db002")
    assert code == 1 and "does not match db001" in err
    code, _, err = cli(capsys, *m, "--json", "destroy", "db001")
    assert code == 1
    plan = json.loads(err[err.index("{") : err.rindex("}") + 1])["plan"]  # after the endpoint notice
    assert plan["dataLoss"] and plan["dataLoss"][0].startswith("server demo-db001: node db001's disk")
    assert "db001" in {s["labels"]["nix-infra/node"] for s in fake.snapshot()["servers"]}

    # the stateless node goes as before
    code, _, err = cli(capsys, *m, "--yes", "destroy", "worker001")
    assert code == 0, err

    code, _, err = cli(capsys, *m, "destroy", "db001", "--allow-data-loss", "--confirm", "db001")
    assert code == 0, err
    assert "volumes demo-db001-pgdata are detached and kept" in err
    assert [s["name"] for s in fake.snapshot()["servers"]] == ["demo-ctrl001"]
    [vol] = volumes(fake)
    assert vol["server"] is None and vol["protection"] == {"delete": True}

    # provision makes a new server and gives it the same volume: the data survives
    code, _, err = provision(capsys, db_manifest)
    assert code == 0, err
    [again] = volumes(fake)
    assert again["id"] == vol["id"] and again["server"] == server(fake, "demo-db001")["id"]


def test_destroy_of_a_volume_needs_the_flag_and_the_node_name(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], db_manifest: Path, fake: FakeHcloud
) -> None:
    assert provision(capsys, db_manifest)[0] == 0
    m = ["--manifest", str(db_manifest)]
    code, _, err = cli(capsys, *m, "--yes", "destroy", "--volume", "db001/pgdata")
    assert code == 1 and "DATA LOSS: destroys every file on volume pgdata of node db001 (20 GB)" in err
    code, _, err = cli(capsys, *m, "destroy", "--volume", "db001/nosuch", "--allow-data-loss", "--confirm", "db001")
    assert code == 1 and "no volume nosuch of node db001" in err
    code, _, err = cli(capsys, *m, "destroy", "--volume", "db001/../x")
    assert code == 2 and "is not NODE/VOLUME" in err
    assert len(volumes(fake)) == 1
    code, _, err = cli(capsys, *m, "destroy", "--volume", "db001/pgdata", "--allow-data-loss", "--confirm", "db001")
    assert code == 0, err
    assert volumes(fake) == []
    assert "db001" in {s["labels"]["nix-infra/node"] for s in fake.snapshot()["servers"]}


def test_destroy_all_with_data_needs_the_flag(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], db_manifest: Path, fake: FakeHcloud
) -> None:
    assert provision(capsys, db_manifest)[0] == 0
    m = ["--manifest", str(db_manifest)]
    code, _, err = cli(capsys, *m, "destroy", "--all", "--confirm", "demo")
    assert code == 1 and "refused" in err and "--allow-data-loss" in err
    assert len(volumes(fake)) == 1
    code, _, err = cli(capsys, *m, "destroy", "--all", "--allow-data-loss", "--confirm", "demo")
    assert code == 0, err
    snap = fake.snapshot()
    assert snap["servers"] == snap["volumes"] == snap["networks"] == snap["ssh_keys"] == []


# ---- an installed node is never installed again ---------------------------------------------------


def test_provision_keeps_an_installed_node_installed(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], db_manifest: Path, fake: FakeHcloud
) -> None:
    """Recording volumes (and growing them) rewrites facts/<node>.json: it must keep `installed`,
    or the next deploy would run nixos-anywhere on a node with data."""
    from dataclasses import replace

    from nix_infra.facts import FactsStore

    assert provision(capsys, db_manifest)[0] == 0
    store = FactsStore(Path("facts"))
    known = store.read("db001")
    assert known is not None and not known.installed
    store.write(replace(known, installed=True, volumes={}))  # as deploy leaves it; volumes lost too
    code, _, err = provision(capsys, with_size(db_manifest, 40))
    assert code == 0, err
    after = store.read("db001")
    assert after is not None and after.installed and after.host_key == known.host_key
    assert after.volumes["pgdata"].id == volumes(fake)[0]["id"]


@pytest.mark.parametrize("facts_say", ["installed", "nothing"])
def test_install_refuses_a_node_that_is_not_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, facts_say: str
) -> None:
    from nix_infra.bootstrap import install
    from nix_infra.errors import NixInfraError
    from nix_infra.facts import FactsStore, NodeFacts, generate_host_key
    from nix_infra.ssh import SshTarget

    log = tmp_path / "nixos-anywhere.log"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "nixos-anywhere").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (bindir / "nixos-anywhere").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    store = FactsStore(tmp_path / "facts")
    if facts_say == "installed":
        store.write(NodeFacts(node="db001", host_key=generate_host_key().public, public_ipv4="192.0.2.7"))
    target = SshTarget(node="db001", host="192.0.2.7", known_hosts=store.known_hosts)
    with pytest.raises(NixInfraError, match="not a fresh server"):
        install(".", "db001", target, store, reboot_timeout=1)
    assert not log.exists()


@pytest.mark.parametrize(
    ("volumes_field", "message"),
    [
        ([], "volumes: expected an object"),
        ({"../x": {"id": 1, "linuxDevice": "/dev/disk/by-id/scsi-0HC_Volume_1"}}, "is not a volume name"),
        ({"data": {"id": "1", "linuxDevice": "/dev/disk/by-id/scsi-0HC_Volume_1"}}, "volumes.data.id"),
        ({"data": {"id": True, "linuxDevice": "/dev/disk/by-id/scsi-0HC_Volume_1"}}, "volumes.data.id"),
        ({"data": {"id": 0, "linuxDevice": "/dev/disk/by-id/scsi-0HC_Volume_0"}}, "volumes.data.id"),
        ({"data": {"id": 1, "linuxDevice": "/dev/sda"}}, "volumes.data.linuxDevice"),
        ({"data": {"id": 1, "linuxDevice": "/dev/disk/by-id/scsi-0HC_Volume_1", "x": 1}}, "exactly the fields"),
    ],
)
def test_facts_volumes_are_checked_where_read(volumes_field: Any, message: str) -> None:
    from nix_infra.facts import NodeFacts, generate_host_key

    data = {"node": "db001", "hostKey": generate_host_key().public, "publicIpv4": None, "volumes": volumes_field}
    with pytest.raises(ValueError, match=message):
        NodeFacts.from_json(data, "db001")
    good = {"data": {"id": 7, "linuxDevice": "/dev/disk/by-id/scsi-0HC_Volume_7"}}
    assert NodeFacts.from_json({**data, "volumes": good}).to_json()["volumes"] == good
