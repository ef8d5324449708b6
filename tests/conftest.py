"""Shared fixtures: the real database servers the SQL tests run against.

`postgres_url` and `mysql_url` return a SQLAlchemy URL string once the server has answered
`SELECT 1`. An unreachable server skips the test with the reason, unless SYNC_REQUIRE_DBS=1
(CI with the services up), where it fails instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa

pytest_plugins = ["tests.runtime_db"]  # the `db` and `registry` fixtures of the runtime tests

# tests/test_conformance.py leaves its tally here; the terminal summary prints it.
CONFORMANCE_TALLY = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    tally = config.stash.get(CONFORMANCE_TALLY, None)
    if tally:
        terminalreporter.write_line(tally)


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


def scratch_url(server_url: str, name: str) -> str:
    """A database of its own on the server of `server_url`, created when missing, so tests never
    touch what else lives in `test`. SYNC_TEST_DB_SUFFIX is appended to `name`, so that two
    checkouts testing at once on one machine never share a scratch database."""
    url = sa.make_url(server_url)
    name += os.environ.get("SYNC_TEST_DB_SUFFIX", "")
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            if url.get_backend_name() == "postgresql":
                if not conn.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).first():
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4"))
    finally:
        admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


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


@contextlib.contextmanager
def running_moto() -> Iterator[str]:
    """A moto server on a free loopback port, for tests of the real AWS APIs (boto3 and
    Terraform talk to it exactly as to AWS), stopped on leaving. Yields its endpoint URL."""
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
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The session's moto server (`running_moto`)."""
    with running_moto() as url:
        yield url


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


# --- a deployed pipeline: the generated Terraform applied to the moto server ---------------


class DeployedPipeline(NamedTuple):
    """What `deployed_pipeline` yields: the endpoint the resources live on, the Terraform
    outputs (name -> value: queue URLs and ARNs, stream ARNs, pipe ARNs, the function name)
    and the Terraform working directory (a copy of build/terraform, with its state)."""

    endpoint: str
    outputs: dict[str, Any]
    workdir: Path
    network: dict[str, str]  # project.yaml's VPC, subnet and security group ids -> moto's


def moto_network(endpoint: str, root: Path) -> dict[str, str]:
    """A VPC, a subnet per id of project.yaml's lambda.vpc.subnet_ids (each in its own
    Availability Zone) and its security groups, made on the moto server; project.yaml's ids
    are replaced by theirs (EC2 refuses endpoints in a VPC it does not hold). Returns
    {project.yaml id: moto id}."""
    import re

    import yaml

    project_file = root / "project.yaml"
    text = project_file.read_text(encoding="utf-8")
    vpc_settings = yaml.safe_load(text)["lambda"]["vpc"]
    ec2 = moto_client(endpoint, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ids = {vpc_settings["vpc_id"]: vpc}
    for i, subnet in enumerate(vpc_settings["subnet_ids"]):
        zone = "ap-northeast-1" + "acd"[i % 3]
        made = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=zone)
        ids[subnet] = made["Subnet"]["SubnetId"]
    for group in vpc_settings["security_group_ids"]:
        ids[group] = ec2.create_security_group(GroupName=group, Description="sync", VpcId=vpc)["GroupId"]
    text = re.sub("|".join(map(re.escape, ids)), lambda m: ids[m.group(0)], text)
    project_file.write_text(text, encoding="utf-8")
    return ids


def moto_client(endpoint: str, service: str) -> Any:
    """A boto3 client of the moto server, in the region the bundled project deploys to."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="ap-northeast-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def terraform_or_skip() -> tuple[str, Path]:
    """The terraform binary and the offline provider mirror, or a skip (a failure under
    SYNC_REQUIRE_TERRAFORM=1)."""
    import shutil

    binary = shutil.which("terraform")
    plugin_dir = Path(os.environ.get("SYNC_TF_PLUGIN_DIR", "/opt/tf-plugins"))
    reason = None
    if binary is None:
        reason = "no terraform binary on PATH"
    elif not plugin_dir.is_dir():
        reason = f"no provider mirror at {plugin_dir} (set SYNC_TF_PLUGIN_DIR)"
    if reason:
        if os.environ.get("SYNC_REQUIRE_TERRAFORM") == "1":
            pytest.fail(f"SYNC_REQUIRE_TERRAFORM=1 but {reason}", pytrace=False)
        print(f"skipping terraform tests: {reason}")
        pytest.skip(reason)
    assert binary is not None
    return binary, plugin_dir


def copy_project(dest: Path) -> Path:
    """project.yaml, mappings/ and build/ of the repository, without what Terraform or
    `package` left in build/ (zip, state, plugins, override files)."""
    import shutil

    repo = Path(__file__).resolve().parent.parent
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo / "project.yaml", dest / "project.yaml")
    shutil.copytree(repo / "mappings", dest / "mappings")
    shutil.copytree(
        repo / "build",
        dest / "build",
        ignore=shutil.ignore_patterns(
            "*.zip",
            ".terraform",
            ".terraform.lock.hcl",
            "terraform.tfstate*",
            "*override.tf.json",
            ".*.tmp-*",
        ),
    )
    return dest


def _step(args: list[str], cwd: Path, env: dict[str, str], timeout: int, what: str) -> str:
    import subprocess

    proc = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-60:])
        pytest.fail(f"{what} failed (exit {proc.returncode}):\n{tail}", pytrace=False)
    return proc.stdout


def deploy(root: Path, endpoint: str, network: dict[str, str]) -> DeployedPipeline:
    """The project at `root` deployed to the moto server with the real terraform, as a user
    would: `python -m generator build`, `package --no-deps` (moto stores the code, it never
    runs it), `override --endpoint <moto> --moto`, then terraform init and apply."""
    import json
    import sys

    binary, plugin_dir = terraform_or_skip()
    repo = Path(__file__).resolve().parent.parent
    generator = [sys.executable, "-m", "generator"]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    _step(generator + ["build", "--root", str(root)], repo, base_env, 120, "generator build")
    _step(generator + ["package", "--root", str(root), "--no-deps"], repo, base_env, 120, "generator package")
    _step(
        generator + ["override", "--root", str(root), "--endpoint", endpoint, "--moto"],
        repo,
        base_env,
        60,
        "generator override",
    )
    workdir = root / "build" / "terraform"
    rc = root / "empty.tfrc"
    rc.write_text("")
    env = {
        **base_env,
        # The machine's TF_CLI_CONFIG_FILE may name a missing file; the mirror is passed explicitly.
        "TF_CLI_CONFIG_FILE": str(rc),
        "TF_IN_AUTOMATION": "1",
        # The standard credential chain, as a user of the override would have it.
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "ap-northeast-1",
    }
    _step(
        [binary, "init", "-backend=false", "-input=false", "-no-color", f"-plugin-dir={plugin_dir}"],
        workdir,
        env,
        120,
        "terraform init",
    )
    _step(
        [binary, "apply", "-auto-approve", "-input=false", "-no-color", "-parallelism=30"],
        workdir,
        env,
        240,
        "terraform apply",
    )
    raw = json.loads(_step([binary, "output", "-json", "-no-color"], workdir, env, 60, "terraform output"))
    return DeployedPipeline(endpoint, {name: out["value"] for name, out in raw.items()}, workdir, network)


@pytest.fixture(scope="session")
def deployed_pipeline(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> DeployedPipeline:
    """The bundled project deployed once per session to the moto server (`deploy`), its VPC,
    subnets and security group made there first (`moto_network`). The apply takes about a
    minute, most of it the provider waiting ~25 s per SQS queue for its attributes to settle
    (a DLQ, then the queue whose redrive names it).

    Do not apply the directory again: moto returns RedrivePolicy with spaces after the JSON
    separators, so every plan shows the three FIFO queues (and the policies reading their
    ARNs) as changed."""
    terraform_or_skip()
    root = copy_project(tmp_path_factory.mktemp("deployed") / "project")
    return deploy(root, moto_server, moto_network(moto_server, root))


def run_generator(*argv: object, timeout: float = 600) -> Any:
    """`python -m generator ARGV...` as a user runs it, from the repository root."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "generator", *map(str, argv)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
