"""TLS to the database: verified by default whenever the server is not on this machine.

SYNC_DB_TLS chooses (the generated Terraform sets it from project.yaml, database.tls.mode):
- verify-full (the default): encrypted, the server's certificate checked against the CA bundle
  and its name against the host connected to (libpq sslmode=verify-full; for MySQL and
  MariaDB an ssl.SSLContext with CERT_REQUIRED and check_hostname);
- require: encrypted, nothing verified (a man in the middle goes unnoticed);
- off: the driver's own default (libpq: prefer; PyMySQL: TLS when the server offers it).
A loopback host (localhost, 127.0.0.0/8, ::1, a Unix socket) is left to the driver's default
whatever the mode: a local tunnel, a test server. SYNC_DB_CA_BUNDLE names the PEM file of the
CA certificates (a path relative to the Lambda's folder, or absolute); without it the system's
trust store is used. TLS settings already in the database URL (sslmode, ssl_ca...) win.
Standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class TlsMode(StrEnum):
    VERIFY_FULL = "verify-full"
    REQUIRE = "require"
    OFF = "off"


class TlsError(ValueError):
    """A TLS setting that cannot work (an unknown mode, a CA bundle that is not there)."""


LAMBDA_ROOT = Path(__file__).resolve().parent.parent  # the folder the Lambda's code ships in


@dataclass(frozen=True)
class Tls:
    mode: TlsMode = TlsMode.VERIFY_FULL
    ca_bundle: str | None = None  # an absolute path; None: the system's trust store

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tls:
        env = os.environ if env is None else env
        text = env.get("SYNC_DB_TLS", "") or TlsMode.VERIFY_FULL.value
        try:
            mode = TlsMode(text)
        except ValueError:
            known = ", ".join(m.value for m in TlsMode)
            raise TlsError(f"SYNC_DB_TLS={text!r}: expected one of {known}") from None
        ca = env.get("SYNC_DB_CA_BUNDLE") or None
        if ca is not None:
            path = Path(ca) if Path(ca).is_absolute() else LAMBDA_ROOT / ca
            if not path.is_file():
                raise TlsError(
                    f"SYNC_DB_CA_BUNDLE={ca!r}: no such file ({path}); name a PEM file of CA certificates "
                    "shipped with the Lambda (project.yaml database.tls.ca_bundle)"
                )
            ca = str(path)
        return cls(mode, ca)

    def applies_to(self, host: str | None) -> bool:
        """Whether this mode is applied to a connection to `host` (never to a loopback one)."""
        return self.mode is not TlsMode.OFF and not is_loopback(host)


def is_loopback(host: str | None) -> bool:
    """localhost, a loopback address, or no host at all (a Unix socket)."""
    if not host or host.startswith("/") or host.lower() == "localhost":
        return True
    import ipaddress  # here: the cold start of a Lambda never pays for it when the host is a name

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
