"""Do the OpenAPI documents tell the truth? schemathesis against the running services.

With ``make run`` going (or any stack: see ``--help``)::

    make openapi-check
    uv run python -m happ_devtools.openapi_check --max-examples 500 -- --report junit

runs ``st run --checks all`` against the admin API (with the admin token) and
then against the ingress webhook, and fails if either finds a failure. So that
generated requests reach past a 404, it first creates what they can name: a
channel that has received a message (so a conversation, a reply and
request-log entries exist) and a user, for the admin API; and a channel of its
own, requiring signatures, for the webhook. Their ids are schemathesis
dictionaries for the path parameters (used for most, not all, requests), and
``happ_devtools.schemathesis_hooks`` signs webhook requests and states the
rules a JSON schema cannot. Run it against a stack with
``HAPP_ALLOW_PRIVATE_ENDPOINTS=true`` (``make run`` sets it): otherwise every
generated outgoing URL must also resolve to a public address.

Arguments after ``--`` go to both ``st run`` commands.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from happ_common.signing import happ_signature

HOOKS = "happ_devtools.schemathesis_hooks"
SENDER = "openapi-check"
# How often a path parameter takes a prepared id rather than a generated one.
PROBABILITY = 0.8


@dataclass(frozen=True)
class CheckResult:
    service: str
    returncode: int
    output: str


def _st() -> str:
    beside = Path(sys.executable).with_name("st")
    return str(beside) if beside.exists() else shutil.which("st") or "st"


def _toml(value: object) -> str:
    # JSON strings, numbers and arrays of them are valid TOML values.
    return json.dumps(value)


def config_text(ids: dict[str, list[str]], *, live_stream: bool = False) -> str:
    """A schemathesis.toml: the prepared ids as dictionaries for the path
    parameters of the same names, and the admin's live-update stream read briefly."""
    # schemathesis refuses an empty dictionary: a parameter with no prepared
    # value is left to generation alone.
    named = {name: values for name, values in ids.items() if values}
    lines: list[str] = []
    for name, values in named.items():
        lines += [f"[dictionaries.{name}]", f"values = {_toml(values)}", ""]
    lines.append("[parameters]")
    for name in named:
        binding = f'{{ dictionary = "{name}", probability = {PROBABILITY} }}'
        lines.append(f'"path.{name}" = {binding}')
    if not live_stream:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "# Server-Sent Events never end: read the first event, or for half a second.",
        "[[operations]]",
        'include-path = "/api/events"',
        "request-timeout = 0.5",
        "max-stream-events = 1",
        "",
    ]
    return "\n".join(lines)


class Preparer:
    """Creates, through the admin API and the webhook, what the runs name."""

    def __init__(self, admin: httpx.Client, ingress: httpx.Client, outgoing_url: str) -> None:
        self.admin = admin
        self.ingress = ingress
        self.outgoing_url = outgoing_url

    def channel(self, name: str, **fields: object) -> dict[str, Any]:
        body = {"name": name, "outgoing_url": self.outgoing_url, **fields}
        resp = self.admin.post("/api/channels", json=body)
        resp.raise_for_status()
        channel: dict[str, Any] = resp.json()
        return channel

    def admin_ids(self) -> dict[str, list[str]]:
        channel = self.channel("openapi-check (admin)", mode="assistant_with_handoff")
        raw = json.dumps({"sender_id": SENDER, "text": "Hello from the OpenAPI check"}).encode()
        sent = self.ingress.post(
            f"/webhook/{channel['id']}",
            content=raw,
            headers={
                "Content-Type": "application/json",
                "X-HAPP-Signature": happ_signature(channel["hmac_secret"], raw),
            },
        )
        sent.raise_for_status()
        message_id: str = sent.json()["message_id"]
        reply_id = self._reply_to(channel["id"], message_id)
        log_ids = self._log_ids(channel["id"])
        user = self.admin.post(
            "/api/users",
            json={
                "username": f"openapi-check-{secrets.token_hex(4)}",
                "name": "OpenAPI check",
                "password": secrets.token_urlsafe(16),
                "channels": [channel["id"]],
            },
        )
        user.raise_for_status()
        return {
            "channel_id": [channel["id"]],
            "sender_id": [SENDER],
            "message_id": [message_id, *([reply_id] if reply_id else [])],
            "log_id": log_ids,
            "user_id": [user.json()["id"]],
        }

    def _log_ids(self, channel_id: str, timeout_s: float = 10) -> list[str]:
        """The channel's request-log ids, once written: the services write their
        log in batches after answering, so the entries lag the request."""
        deadline = time.monotonic() + timeout_s
        while True:
            resp = self.admin.get(f"/api/channels/{channel_id}/logs", params={"limit": 5})
            resp.raise_for_status()
            ids = [str(entry["id"]) for entry in resp.json()["items"]]
            if ids or time.monotonic() >= deadline:
                return ids
            time.sleep(0.2)

    def _reply_to(self, channel_id: str, message_id: str, timeout_s: float = 30) -> str | None:
        """The reply's id, once the assistant has answered (None if it has not)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            resp = self.admin.get(f"/api/channels/{channel_id}/messages/{message_id}")
            if resp.status_code == 200 and resp.json().get("reply"):
                reply_id: str = resp.json()["reply"]["message_id"]
                return reply_id
            time.sleep(0.2)
        return None


def run_st(
    service: str,
    base_url: str,
    config: str,
    st_args: Sequence[str],
    *,
    env: dict[str, str],
    capture: bool,
    cwd: Path | None,
) -> CheckResult:
    with tempfile.TemporaryDirectory(prefix="happ-openapi-check-") as tmp:
        config_file = Path(tmp) / "schemathesis.toml"
        config_file.write_text(config)
        argv = [
            _st(),
            "--no-color",
            "--config-file",
            str(config_file),
            "run",
            f"{base_url.rstrip('/')}/openapi.json",
            "--checks",
            "all",
            *st_args,
        ]
        print(f"$ {' '.join(a if 'Bearer' not in a else 'Authorization: Bearer …' for a in argv)}")
        # In the caller's folder, so reports and `st replay` find their files there.
        done = subprocess.run(
            argv, env=env, cwd=cwd, capture_output=capture, text=True, check=False
        )
    output = (done.stdout or "") + (done.stderr or "")
    return CheckResult(service, done.returncode, output)


def check(
    *,
    admin_url: str,
    ingress_url: str,
    token: str,
    outgoing_url: str,
    st_args: Sequence[str] = (),
    capture: bool = False,
    cwd: Path | None = None,
) -> list[CheckResult]:
    """Prepare, then run schemathesis against the admin API and the webhook."""
    env = {**os.environ, "SCHEMATHESIS_HOOKS": HOOKS}
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=admin_url, headers=headers, timeout=15) as admin,
        httpx.Client(base_url=ingress_url, timeout=15) as ingress,
    ):
        prepare = Preparer(admin, ingress, outgoing_url)
        admin_ids = prepare.admin_ids()
        # A channel of its own: the admin run may disconnect the other one.
        webhook = prepare.channel(
            "openapi-check (webhook)", require_signature=True, rate_limit_per_second=100_000
        )
        runs: list[Callable[[], CheckResult]] = [
            lambda: run_st(
                "admin",
                admin_url,
                config_text(admin_ids, live_stream=True),
                ["-H", f"Authorization: Bearer {token}", *st_args],
                env=env,
                capture=capture,
                cwd=cwd,
            ),
            lambda: run_st(
                "ingress",
                ingress_url,
                config_text({"channel_id": [webhook["id"]]}),
                list(st_args),
                env={**env, "HAPP_CHECK_SECRET": webhook["hmac_secret"]},
                capture=capture,
                cwd=cwd,
            ),
        ]
        if not capture:  # on a terminal: one report after the other
            return [run() for run in runs]
        # Captured (the test suite): side by side, each waits on its service.
        with ThreadPoolExecutor(max_workers=len(runs)) as pool:
            return list(pool.map(lambda run: run(), runs))


def _default_token() -> str:
    token = os.environ.get("HAPP_ADMIN_TOKEN", "").split(",")[0].strip()
    if token:
        return token
    path = Path(os.environ.get("HAPP_DATA_DIR", ".happ")) / "admin-token"
    return path.read_text().strip() if path.exists() else ""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    st_args = args[args.index("--") + 1 :] if "--" in args else []
    own = args[: args.index("--")] if "--" in args else args
    parser = argparse.ArgumentParser(
        prog="python -m happ_devtools.openapi_check",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    admin_port = os.environ.get("HAPP_ADMIN_PORT", "8081")
    ingress_port = os.environ.get("HAPP_INGRESS_PORT", "8080")
    parser.add_argument("--admin-url", default=f"http://localhost:{admin_port}")
    parser.add_argument("--ingress-url", default=f"http://localhost:{ingress_port}")
    parser.add_argument(
        "--token", default=_default_token(), help="admin token (HAPP_ADMIN_TOKEN, .happ/)"
    )
    parser.add_argument(
        "--outgoing-url",
        default="https://localhost:8443/openapi-check",
        help="the check's channels' outgoing URL (make demo's receiver by default)",
    )
    parser.add_argument("--max-examples", type=int, help="per operation (schemathesis: 100)")
    parser.add_argument("--seed", type=int, help="to repeat a run")
    opts = parser.parse_args(own)
    if not opts.token:
        parser.error("no admin token: pass --token or set HAPP_ADMIN_TOKEN")
    if opts.max_examples:
        st_args = ["--max-examples", str(opts.max_examples), *st_args]
    if opts.seed is not None:
        st_args = ["--seed", str(opts.seed), *st_args]
    results = check(
        admin_url=opts.admin_url,
        ingress_url=opts.ingress_url,
        token=opts.token,
        outgoing_url=opts.outgoing_url,
        st_args=st_args,
    )
    failed = [r.service for r in results if r.returncode != 0]
    verdict = f"FAILED ({', '.join(failed)})" if failed else "both documents hold"
    print(f"OpenAPI check: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
