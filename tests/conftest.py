"""Shared fixtures: the real database servers the SQL tests run against.

`postgres_url` and `mysql_url` return a SQLAlchemy URL string once the server has answered
`SELECT 1`. An unreachable server skips the test with the reason, unless SYNC_REQUIRE_DBS=1
(CI with the services up), where it fails instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/test"


def reachable_url(env_var: str, default: str) -> str:
    """The URL from `env_var` (or `default`) after the server answers SELECT 1."""
    url = os.environ.get(env_var, default)
    shown = sa.make_url(url).render_as_string(hide_password=True)
    # Both psycopg and PyMySQL take connect_timeout; a dead host must not hang the suite.
    engine = sa.create_engine(url, connect_args={"connect_timeout": 5}, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any driver or network error means "not reachable"
        reason = (
            f"{env_var}={shown} is not reachable: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        )
        if os.environ.get("SYNC_REQUIRE_DBS") == "1":
            pytest.fail(f"{reason} (SYNC_REQUIRE_DBS=1 requires the database servers)", pytrace=False)
        print(reason)
        pytest.skip(reason)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return reachable_url("SYNC_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@pytest.fixture(scope="session")
def mysql_url() -> str:
    return reachable_url("SYNC_TEST_MYSQL_URL", DEFAULT_MYSQL_URL)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port, for tests of the real AWS APIs (boto3 and
    Terraform talk to it exactly as to AWS). Yields its endpoint URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto server did not start on {url}", pytrace=False)
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials and endpoint pointing every AWS client at the moto server."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "ap-northeast-1",
        "AWS_REGION": "ap-northeast-1",
        "AWS_ENDPOINT_URL": moto_server,
    }.items():
        monkeypatch.setenv(key, value)
    return moto_server


@pytest.fixture(scope="session")
def model() -> Any:
    """The model of the bundled project.yaml and mappings/ (validated, no errors)."""
    from generator.load import load

    loaded = load(Path(__file__).resolve().parent.parent)
    assert loaded.model is not None, loaded.diagnostics.render_text()
    return loaded.model
