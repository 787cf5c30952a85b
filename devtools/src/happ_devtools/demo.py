"""``make demo``: see a signed reply arrive, with ``make run`` going in another terminal.

Starts an HTTPS receiver on https://localhost:8443 (development CA, trusted by
``make run``), creates a channel pointing at it, sends one message to the
webhook, and prints the reply HAPP delivers with its signature checked. It then
keeps printing replies until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from happ_devtools.certs import dev_tls
from happ_devtools.receiver import Received, Receiver, server_ssl, signature_ok, start


def signature_verdict(got: Received, channel_id: str, secret: str) -> str:
    """What to print about a reply's signature.

    Every channel pointing at the demo's receiver (one from an earlier demo, one
    made for the README's curl example) delivers here, each signed with its own
    secret: checked against this channel's secret, their replies would read
    "signature valid: NO", which looks like a bug. The body names its channel,
    so such a reply is told apart instead of checked against the wrong secret.
    """
    try:
        body: Any = json.loads(got.body)
    except ValueError:
        body = None
    other = body.get("channel_id") if isinstance(body, dict) else None
    if isinstance(other, str) and other != channel_id:
        return f"reply for another channel ({other}): not verified with this channel's secret"
    return "signature valid: " + ("yes" if signature_ok(got, secret) else "NO")


async def demo(data_dir: Path) -> int:
    token_file = data_dir / "admin-token"
    token = os.environ.get("HAPP_ADMIN_TOKEN") or (
        token_file.read_text().strip() if token_file.exists() else ""
    )
    admin = os.environ.get("HAPP_DEMO_ADMIN_URL", "http://localhost:8081")
    port = int(os.environ.get("HAPP_DEMO_PORT", "8443"))
    tls = dev_tls(data_dir / "tls")
    secret = ""
    channel_id = ""

    def show(got: Received) -> None:
        print(f"\n← reply received at https://localhost:{port}{got.path}")
        for h in ("X-HAPP-Signature", "X-HAPP-Delivery-Id", "X-HAPP-Attempt", "webhook-signature"):
            print(f"  {h}: {got.headers.get(h)}")
        print(f"  {signature_verdict(got, channel_id, secret)}")
        try:
            shown = json.dumps(got.json(), indent=2, ensure_ascii=False)
        except (ValueError, AssertionError):
            shown = got.body.decode("utf-8", "replace")
        print("  " + shown.replace("\n", "\n  "), flush=True)

    receiver = Receiver(on_receive=show)
    runner = await start(receiver, port, server_ssl(tls.cert_file, tls.key_file), host="localhost")
    try:
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as http:
            try:
                resp = await http.post(
                    f"{admin}/api/channels",
                    json={"name": "Demo website", "outgoing_url": f"https://localhost:{port}/happ"},
                )
            except httpx.ConnectError:
                print(
                    f"Cannot reach the admin API at {admin}: start `make run` first.",
                    file=sys.stderr,
                )
                return 1
            if resp.status_code != 201:
                print(
                    f"Creating the channel failed: {resp.status_code} {resp.text}", file=sys.stderr
                )
                return 1
            channel = resp.json()
            secret, channel_id = channel["hmac_secret"], channel["id"]
            print(f"Channel {channel['id']} created; webhook: {channel['webhook_url']}")
            message = {
                "sender_id": "user_42",
                "sender_name": "Dmytro",
                "text": "Hello!",
                "metadata": {"source": "website"},
            }
            print(f"→ POST {channel['webhook_url']} {json.dumps(message)}")
            sent = await http.post(channel["webhook_url"], json=message)
            print(f"  {sent.status_code} {sent.text}")
            print(
                "\nWaiting for replies (Ctrl-C to stop). Send more with:\n"
                f"  curl -s -X POST {channel['webhook_url']} -H 'Content-Type: application/json' "
                """-d '{"sender_id": "user_42", "text": "And again?"}'""",
                flush=True,
            )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
    return 0


def main() -> None:
    data_dir = Path(os.environ.get("HAPP_DATA_DIR", ".happ")).resolve()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(demo(data_dir)))


if __name__ == "__main__":
    main()
