"""Verified TLS to the database (runtime.tls): against PostgreSQL and MariaDB servers the tests
start on this machine's non-loopback address with a test CA (tests/tls_servers.py). The right
CA connects over TLS; a wrong CA, a certificate for another host name and a server without
TLS are each refused with an error that says so; `require` encrypts without verifying; a
loopback host is left to the driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from runtime.config import ConfigError, make_engine
from runtime.tls import Tls, TlsError, TlsMode, is_loopback
from tests import tls_servers as ts


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ts.Pki:
    return ts.pki_or_skip(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module", params=["postgresql", "mysql"])
def servers(request: pytest.FixtureRequest, pki: ts.Pki) -> Iterator[tuple[ts.Server, ts.Server]]:
    start = ts.start_postgresql if request.param == "postgresql" else ts.start_mariadb
    started: list[ts.Server] = []
    try:
        try:
            started.append(start(pki, tls=True))
            started.append(start(pki, tls=False))
        except (FileNotFoundError, OSError) as exc:
            ts.unavailable(f"cannot start a {request.param} test server: {exc}")
        yield started[0], started[1]
    finally:
        for s in started:
            s.stop()


def connect(url: str, monkeypatch: pytest.MonkeyPatch, mode: str = "", ca: Path | None = None) -> str:
    """Connect as the runtime would with SYNC_DB_TLS / SYNC_DB_CA_BUNDLE; the cipher in use ('' without TLS)."""
    monkeypatch.setenv("SYNC_DB_TLS", mode)
    if ca is None:
        monkeypatch.delenv("SYNC_DB_CA_BUNDLE", raising=False)
    else:
        monkeypatch.setenv("SYNC_DB_CA_BUNDLE", str(ca))
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                row = conn.execute(
                    text("SELECT cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                ).first()
                return str(row[0] or "") if row else ""
            row = conn.execute(text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).first()
            return str(row[1] or "") if row else ""
    finally:
        engine.dispose()


def refused(url: str, monkeypatch: pytest.MonkeyPatch, ca: Path | None) -> str:
    with pytest.raises(OperationalError) as info:
        connect(url, monkeypatch, "", ca)
    return " ".join(str(info.value.orig).split())


def test_the_right_ca_connects_over_tls_by_default(
    servers: tuple[ts.Server, ts.Server], pki: ts.Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls, _ = servers
    # WHEN the runtime connects to a non-loopback host with no TLS setting but the CA bundle
    # THEN the connection is encrypted (verify-full is the default)
    assert connect(tls.url(), monkeypatch, "", pki.ca) != ""


def test_a_wrong_ca_is_refused(
    servers: tuple[ts.Server, ts.Server], pki: ts.Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls, _ = servers
    why = refused(tls.url(), monkeypatch, pki.other_ca)
    assert "certificate verify failed" in why, why


def test_a_certificate_for_another_host_name_is_refused(
    servers: tuple[ts.Server, ts.Server], pki: ts.Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls, _ = servers
    tls.use_cert(pki.wrong_name_cert)
    try:
        why = refused(tls.url(), monkeypatch, pki.ca)
    finally:
        tls.use_cert(pki.cert)
    assert any(w in why for w in ("does not match host name", "IP address mismatch", "Hostname mismatch")), (
        why
    )


def test_a_server_without_tls_is_refused(
    servers: tuple[ts.Server, ts.Server], pki: ts.Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, plain = servers
    why = refused(plain.url(), monkeypatch, pki.ca)
    assert any(w in why for w in ("does not support SSL", "doesn't support it")), why


def test_require_encrypts_without_verifying_and_off_is_the_drivers_default(
    servers: tuple[ts.Server, ts.Server], pki: ts.Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls, plain = servers
    # require: a CA that signed nothing still connects, encrypted
    assert connect(tls.url(), monkeypatch, "require", pki.other_ca) != ""
    # off: the driver's default, which takes a server without TLS
    assert connect(plain.url(), monkeypatch, "off") == ""


def test_tls_settings_in_the_url_win(
    servers: tuple[ts.Server, ts.Server], pki: ts.Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, plain = servers
    query = {"sslmode": "disable"} if plain.kind == "postgresql" else {"ssl_disabled": "true"}
    assert connect(plain.url(**query), monkeypatch, "verify-full", pki.ca) == ""


def test_settings_that_cannot_work_are_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TlsError, match="expected one of verify-full, require, off"):
        Tls.from_env({"SYNC_DB_TLS": "verify"})
    with pytest.raises(TlsError, match="no such file"):
        Tls.from_env({"SYNC_DB_CA_BUNDLE": "/nonexistent/ca.pem"})
    monkeypatch.setenv("SYNC_DB_TLS", "maybe")
    with pytest.raises(ConfigError, match="SYNC_DB_TLS='maybe'"):
        make_engine("postgresql+psycopg://u@db.example.invalid/x")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [(None, True), ("", True), ("localhost", True), ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
     ("[::1]", True), ("/var/run/postgresql", True), ("10.0.0.5", False), ("db.example.com", False)],
)  # fmt: skip
def test_loopback_hosts_are_left_to_the_driver(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert Tls(TlsMode.VERIFY_FULL).applies_to(host) is not loopback
