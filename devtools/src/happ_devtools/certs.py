"""A development certificate authority and a localhost server certificate.

``make run`` trusts this CA for outgoing deliveries (``HAPP_DELIVERY_CA_FILE``)
so the demo receiver on https://localhost works without any setup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class DevTls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def dev_tls(folder: Path) -> DevTls:
    """Create the CA and certificate once, then reuse them."""
    folder.mkdir(parents=True, exist_ok=True)
    tls = DevTls(folder / "ca.pem", folder / "localhost.pem", folder / "localhost-key.pem")
    if not (tls.ca_file.exists() and tls.cert_file.exists() and tls.key_file.exists()):
        ca = trustme.CA(organization_name="HAPP development CA")
        cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
        ca.cert_pem.write_to_path(str(tls.ca_file))
        cert.private_key_pem.write_to_path(str(tls.key_file))
        cert.cert_chain_pems[0].write_to_path(str(tls.cert_file))
    return tls
