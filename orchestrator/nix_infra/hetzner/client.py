"""Talking to the Hetzner Cloud API: token, endpoint, retries, error translation.

Retries live in one place, the HTTP adapter under the official `hcloud`
client: a 429 waits until the API's `RateLimit-Reset` time, a 5xx (and 423
locked) is retried with capped exponential backoff. The library's own retry
loop is switched off so the two never multiply.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from hcloud import APIException, Client
from hcloud.actions import ActionFailedException, ActionTimeoutException, BoundAction
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from nix_infra import __version__
from nix_infra.errors import NixInfraError

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
TOKEN_HELP = (
    "No Hetzner Cloud API token. Set HCLOUD_TOKEN in the environment, or put a line\n"
    "  HCLOUD_TOKEN=<token>\n"
    "in the cluster repo's .env file (keep .env out of git). Create a Read & Write token in the\n"
    "Hetzner Console: your project > Security > API tokens."
)


@dataclass(frozen=True)
class HcloudSettings:
    """How patiently to talk to the API."""

    endpoint: str = DEFAULT_ENDPOINT
    poll_interval: float = 1.0  # seconds between action polls
    action_timeout: float = 600.0  # give up on an action after this long
    max_retries: int = 8  # per request, for 429 / 5xx / 423
    backoff_factor: float = 0.5  # 5xx backoff: factor * 2**n seconds ...
    backoff_max: float = 30.0  # ... capped here
    rate_limit_wait_max: float = 120.0  # never wait longer than this for a rate-limit reset
    request_timeout: float = 30.0


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (`export ` prefix and quotes allowed; # comments)."""
    values: dict[str, str] = {}
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise NixInfraError(f"{path} is not UTF-8 text (byte {e.start} is invalid); it holds KEY=VALUE lines") from None
    except IsADirectoryError:
        raise NixInfraError(f"{path} is a directory; expected a file of KEY=VALUE lines") from None
    except OSError:
        return values
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def resolve_token(env: Mapping[str, str], repo_dir: Path | None) -> str:
    """The API token: HCLOUD_TOKEN from the environment, else from <repo_dir>/.env."""
    token = env.get("HCLOUD_TOKEN", "").strip()
    if not token and repo_dir is not None:
        token = read_dotenv(repo_dir / ".env").get("HCLOUD_TOKEN", "").strip()
    if not token:
        raise NixInfraError(TOKEN_HELP)
    if re.fullmatch(r"[!-~]{1,512}", token) is None:  # it goes into an HTTP header; never echo it
        raise NixInfraError(
            "HCLOUD_TOKEN (environment or .env) is not an API token: expected printable ASCII "
            "without spaces or control characters"
        )
    return token


def check_endpoint(endpoint: str, where: str) -> str:
    """An API endpoint the token may be sent to: https, or http on loopback only (a fake API).

    Raises NixInfraError naming `where` (the variable and its source) otherwise."""
    try:
        url = urllib.parse.urlsplit(endpoint)
        host = url.hostname or ""
        url.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise NixInfraError(f"{where}: {endpoint[:80]!r} is not a URL") from None
    loopback = host == "localhost" or _is_loopback(host)
    if url.scheme == "https" and host and not url.username and not url.password:
        return endpoint
    if url.scheme == "http" and loopback and not url.username and not url.password:
        return endpoint
    raise NixInfraError(
        f"{where}: {endpoint[:80]!r} is not allowed: the API token is sent there, so it must be "
        "https://<host>/... (http only on 127.0.0.1, ::1 or localhost, for a fake API), without user info"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_from_env(env: Mapping[str, str], repo_dir: Path | None, **overrides: Any) -> HcloudSettings:
    """Endpoint from HCLOUD_ENDPOINT (environment or .env); timing knobs for tests.

    The repo's .env may redirect the API only together with its own token: an
    HCLOUD_ENDPOINT in .env while HCLOUD_TOKEN comes from the environment (a CI
    secret, say) is refused, so a change to a repo cannot send the operator's
    token elsewhere. Raises NixInfraError naming the variable."""
    dotenv = read_dotenv(repo_dir / ".env") if repo_dir is not None else {}
    if env.get("HCLOUD_ENDPOINT"):
        endpoint = check_endpoint(env["HCLOUD_ENDPOINT"], "HCLOUD_ENDPOINT (environment)")
    elif dotenv.get("HCLOUD_ENDPOINT"):
        endpoint = check_endpoint(dotenv["HCLOUD_ENDPOINT"], "HCLOUD_ENDPOINT (.env)")
        if env.get("HCLOUD_TOKEN", "").strip() and endpoint.rstrip("/") != DEFAULT_ENDPOINT:
            raise NixInfraError(
                "HCLOUD_ENDPOINT in the repo's .env would send the HCLOUD_TOKEN of your environment to "
                f"{endpoint[:80]}; set HCLOUD_ENDPOINT in the environment instead, or put the token in .env too"
            )
    else:
        endpoint = DEFAULT_ENDPOINT
    if endpoint.rstrip("/") != DEFAULT_ENDPOINT:
        log.warning("Hetzner API endpoint: %s (not Hetzner's)", endpoint.rstrip("/"))
    values: dict[str, Any] = {"endpoint": endpoint.rstrip("/")}
    for key, name in [
        ("poll_interval", "NIX_INFRA_HCLOUD_POLL_INTERVAL"),
        ("backoff_factor", "NIX_INFRA_HCLOUD_BACKOFF"),
        ("action_timeout", "NIX_INFRA_HCLOUD_ACTION_TIMEOUT"),
    ]:
        if env.get(name):
            try:
                number = float(env[name])
            except ValueError:
                number = math.nan
            if not math.isfinite(number) or number <= 0:  # float() takes "nan" and "inf"
                raise NixInfraError(f"{name}={env[name][:40]!r} is not a number of seconds (a positive number)")
            values[key] = number
    values.update({k: v for k, v in overrides.items() if v is not None})
    return HcloudSettings(**values)


class HetznerRetry(Retry):
    """urllib3 Retry that waits for Hetzner's RateLimit-Reset on 429."""

    RATE_LIMIT_WAIT_MAX = 120.0

    def get_retry_after(self, response: Any) -> float | None:
        reset = response.headers.get("RateLimit-Reset")
        if response.status == 429 and reset:
            try:
                wait = float(reset) - time.time()
            except ValueError:
                wait = 1.0
            wait = min(max(wait, 0.05), self.RATE_LIMIT_WAIT_MAX)
            log.info("Hetzner API rate limit reached; waiting %.1f s for the reset", wait)
            return wait
        return super().get_retry_after(response)

    def sleep(self, response: Any = None) -> None:
        """Say why and for how long before every wait but a rate limit's (get_retry_after says that)."""
        if response is None or response.status != 429:
            reason = f"answered {response.status}" if response is not None else "could not be reached"
            log.info(
                "Hetzner API %s; trying again in %.1f s (%s retries left)", reason, self.get_backoff_time(), self.total
            )
        super().sleep(response)


def make_client(token: str, settings: HcloudSettings) -> Client:
    """An hcloud Client whose requests retry 429 (until RateLimit-Reset) and 5xx (backoff)."""
    client = Client(
        token=token,
        api_endpoint=settings.endpoint,
        application_name="nix-infra",
        application_version=__version__,
        poll_interval=settings.poll_interval,
        poll_max_retries=max(1, int(settings.action_timeout / max(settings.poll_interval, 0.001))),
        timeout=settings.request_timeout,
    )
    retry_cls = type("ConfiguredRetry", (HetznerRetry,), {"RATE_LIMIT_WAIT_MAX": settings.rate_limit_wait_max})
    retry = retry_cls(
        total=settings.max_retries,
        connect=2,
        read=0,  # a dropped answer may have been carried out: never replay blindly
        status=settings.max_retries,
        status_forcelist=(423, 429, 500, 502, 503, 504),
        allowed_methods=None,  # every method: a 429/5xx answer means nothing was done
        backoff_factor=settings.backoff_factor,
        backoff_max=settings.backoff_max,
        respect_retry_after_header=True,
        raise_on_status=False,  # hand the last answer to hcloud, which raises with Hetzner's code
    )
    adapter = HTTPAdapter(max_retries=retry)
    base = client._client  # hcloud's transport; its retry loop would multiply ours
    base._retry_max_retries = 0
    base._session.mount("https://", adapter)
    base._session.mount("http://", adapter)
    return client


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Turn API and transport failures into one message naming what was being done."""
    try:
        yield
    except ActionFailedException as exc:
        error = exc.action.error
        code, message = (error["code"], error["message"]) if error else ("unknown", "")
        raise NixInfraError(f"{what}: Hetzner action {exc.action.command} failed: {code}: {message}") from exc
    except ActionTimeoutException as exc:
        raise NixInfraError(f"{what}: Hetzner action {exc.action.command} did not finish in time") from exc
    except APIException as exc:
        if exc.code == "unauthorized":
            raise NixInfraError(
                "Hetzner rejected the API token (401 unauthorized). Check HCLOUD_TOKEN (or .env): "
                "it must be a Read & Write token of the project."
            ) from exc
        raise NixInfraError(f"{what}: Hetzner API error {exc.code}: {exc.message}") from exc
    except requests.exceptions.RequestException as exc:
        raise NixInfraError(
            f"{what}: cannot reach the Hetzner API ({type(exc).__name__}); "
            "nothing after this step was done, re-run to continue"
        ) from exc


WAIT_REPORT_SECONDS = 5.0  # while an action runs, say so this often (no silent wait)


def wait_for(action: BoundAction, what: str) -> None:
    """Poll an action to completion, saying every few seconds what is being waited for; a failure
    names `what` and Hetzner's error code."""
    done = threading.Event()
    start = time.monotonic()

    def report() -> None:
        while not done.wait(WAIT_REPORT_SECONDS):
            log.info("%s: waiting for Hetzner action %s (%.0f s)", what, action.command, time.monotonic() - start)

    reporter = threading.Thread(target=report, name="action-wait", daemon=True)
    reporter.start()
    try:
        with api_errors(what):
            action.wait_until_finished()
    finally:
        done.set()
        reporter.join()
