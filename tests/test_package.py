"""`python -m generator package`: the sync Lambda's deployment zip.

The zip is unpacked and run by an interpreter that sees nothing but it (`python -I -S`: no
site-packages, no PYTHONPATH, no current directory): the handler applies a real SQS batch to
SQLite, so the zip alone carries the runtime, the registry and SQLAlchemy. Building it with
its dependencies needs pip to reach the package index; where it cannot, those tests skip with
the reason (and only then).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from generator import cli
from generator import package as pkg
from tests import factories
from tests.conftest import copy_project, run_generator

REPO_ROOT = Path(__file__).resolve().parent.parent


def generator(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return run_generator(*argv, timeout=600)


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


def expected_runtime_sources() -> set[str]:
    """runtime/**/*.py of the repository: the package goes into the zip whole."""
    out = set()
    for path in (REPO_ROOT / "runtime").rglob("*.py"):
        name = path.relative_to(REPO_ROOT).as_posix()
        if "__pycache__" not in name:
            out.add(name)
    return out


@pytest.fixture(scope="module")
def with_deps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy packaged with --with-deps --platform local; its zip path."""
    root = copy_project(tmp_path_factory.mktemp("package") / "project")
    proc = generator("package", "--root", root, "--with-deps", "--platform", "local")
    if proc.returncode == cli.EXIT_TOOL and "could not reach the package index" in proc.stderr:
        reason = "pip could not reach the package index: " + proc.stderr.strip().splitlines()[-1]
        print(reason)
        pytest.skip(reason)
    assert proc.returncode == 0, proc.stderr
    assert "package: wrote" in proc.stderr and "sha256" in proc.stderr
    return root / "build" / "lambda.zip"


# --- the zip alone runs the handler ------------------------------------------------------

CHILD = r"""
import json, sys
unpacked, event_file, result_file = sys.argv[1:4]
sys.path.insert(0, unpacked)
import sqlalchemy
import runtime.handler
from runtime.config import database_url, make_engine
from runtime.registry import load_registry
from runtime.schema import build_metadata

registry = load_registry()  # SYNC_REGISTRY unset: registry.json beside the package
build_metadata(registry).create_all(make_engine(database_url()))
response = runtime.handler.handler(json.load(open(event_file)), None)
try:
    import synctools.local
    tools = True
except ImportError:
    tools = False
with open(result_file, "w") as fh:
    json.dump({
        "response": response,
        "runtime": runtime.__file__,
        "sqlalchemy": sqlalchemy.__file__,
        "handler_cached": runtime.handler.__spec__.cached,
        "tools_importable": tools,
        "path": sys.path,
    }, fh)
"""


def test_the_zip_alone_runs_the_handler_in_a_clean_interpreter(with_deps: Path, tmp_path: Path) -> None:
    # GIVEN the zip unpacked into an empty directory, and a batch of three entities' messages
    unpacked = tmp_path / "task"
    with zipfile.ZipFile(with_deps) as zf:
        zf.extractall(unpacked)
    batch = factories.event(
        [
            factories.order_record("o-1", total="1200.50", customer="7"),
            factories.customer_record("C-1", email="c1@example.com"),
            factories.item_record("o-1", 1, quantity="3"),
        ]
    )
    (tmp_path / "event.json").write_text(json.dumps(batch))
    db = tmp_path / "legacy.db"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # WHEN an isolated interpreter without site-packages imports only from it and runs the handler
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", CHILD, str(unpacked), "../event.json", "../result.json"],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "SYNC_DATABASE_URL": f"sqlite:///{db}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    # THEN every message applied, from code that came out of the zip
    assert result["response"] == {"batchItemFailures": []}, proc.stdout
    assert result["runtime"].startswith(str(unpacked)) and result["sqlalchemy"].startswith(str(unpacked))
    assert not any("site-packages" in p for p in result["path"])
    # AND the precompiled byte-code is what the interpreter found (same Python: --platform local)
    assert result["handler_cached"].startswith(str(unpacked / "runtime" / "__pycache__"))
    # AND the operator tools are not there
    assert result["tools_importable"] is False
    # AND the rows are in the database
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        order = conn.execute(sa.text("SELECT order_id, total_amount FROM orders")).one()
        customer = conn.execute(sa.text("SELECT external_id, email FROM customers")).one()
        items = conn.execute(sa.text("SELECT count(*) FROM order_items")).scalar_one()
    engine.dispose()
    assert order[0] == "o-1" and float(order[1]) == 1200.50
    assert tuple(customer) == ("C-1", "c1@example.com")
    assert items == 1
    # AND the handler logged one metrics line per entity, each counting its message as applied
    logs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(doc["Entity"] for doc in logs) == ["customers", "order_items", "orders"]
    assert all(doc["Applied"] == 1 for doc in logs), logs


def test_the_zip_holds_runtime_registry_and_dependencies_only(with_deps: Path) -> None:
    # GIVEN the zip built with its dependencies
    listed = names(with_deps)
    files = [n for n in listed if not n.endswith("/")]
    # THEN the runtime folder is there whole, the generator and the tools are not
    assert expected_runtime_sources() <= set(files)
    # AND registry.json sits at the root, byte for byte the build's
    with zipfile.ZipFile(with_deps) as zf:
        assert zf.read("registry.json") == (with_deps.parent / "registry.json").read_bytes()
        infos = zf.infolist()
    # AND SQLAlchemy and the driver of the project's dialect (postgresql) are packaged; boto3,
    # which the Lambda runtime provides, and the scripts pip writes to bin/ are not
    tops = {n.split("/")[0] for n in files}
    assert {"sqlalchemy", "psycopg"} <= tops
    assert not tops & {"boto3", "botocore", "bin", "generator", "synctools", "tests"}
    # AND nothing was compiled at pip time with a timestamp: .pyc only as unchecked-hash
    for info in infos:
        if info.filename.endswith(".pyc"):
            with zipfile.ZipFile(with_deps) as zf:
                header = zf.read(info.filename)[:8]
            assert int.from_bytes(header[4:8], "little") == 0b01, info.filename  # hash-based, unchecked
            break
    else:
        pytest.fail("no byte-code in a --platform local zip")


def test_entries_are_sorted_with_fixed_times_and_permissions(with_deps: Path) -> None:
    with zipfile.ZipFile(with_deps) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
        mode = info.external_attr >> 16
        assert mode == (0o040755 if info.is_dir() else 0o100644), (info.filename, oct(mode))


def test_two_builds_give_identical_bytes(with_deps: Path) -> None:
    # GIVEN the zip of the first build
    first = with_deps.read_bytes()
    root = with_deps.parent.parent
    # WHEN the same inputs are packaged again (pip installs again, byte-code is compiled again)
    proc = generator("package", "--root", root, "--with-deps", "--platform", "local")
    # THEN the bytes are the same
    assert proc.returncode == 0, proc.stderr
    assert with_deps.read_bytes() == first
    # AND no temporary file is left beside it
    assert [p.name for p in with_deps.parent.iterdir() if p.name.startswith(".")] == []


# --- without dependencies, stale builds, dry runs ----------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def test_no_deps_packages_the_runtime_and_registry_only(project: Path) -> None:
    # WHEN packaged without dependencies for the Lambda platform of project.yaml
    proc = generator("package", "--root", project, "--no-deps")
    assert proc.returncode == 0, proc.stderr
    # THEN the zip holds the runtime sources and registry.json, and nothing else but the
    # byte-code of those sources when this interpreter is the runtime's Python
    zip_path = project / "build" / "lambda.zip"
    files = {n for n in names(zip_path) if not n.endswith("/")}
    sources = expected_runtime_sources() | {"registry.json"}
    assert {n for n in files if not n.endswith(".pyc")} == sources
    compiled = pkg.can_compile(pkg.Target.for_lambda("python3.12", "x86_64"))
    assert bool(files - sources) == compiled
    assert "dependencies: none (--no-deps)" in proc.stderr


def test_a_stale_build_is_refused_and_the_old_zip_kept(project: Path) -> None:
    # GIVEN a zip from a current build, then a mapping edited without rebuilding
    assert generator("package", "--root", project, "--no-deps").returncode == 0
    zip_path = project / "build" / "lambda.zip"
    before = zip_path.read_bytes()
    mapping = project / "mappings" / "orders.yaml"
    mapping.write_text(mapping.read_text().replace("batch_size: 10   ", "batch_size: 9    ", 1))
    assert mapping.read_text() != (REPO_ROOT / "mappings" / "orders.yaml").read_text()
    # WHEN packaged
    proc = generator("package", "--root", project, "--no-deps")
    # THEN it refuses with exit 1 and says how to fix it, and the zip is untouched
    assert proc.returncode == 1
    assert "is out of date" in proc.stderr and "python -m generator build" in proc.stderr
    assert "differs: build/registry.json" in proc.stderr
    assert zip_path.read_bytes() == before


def test_mapping_errors_exit_1_and_write_nothing(project: Path) -> None:
    mapping = project / "mappings" / "orders.yaml"
    mapping.write_text(mapping.read_text().replace("field: orderID", "field: noSuchField", 1))
    proc = generator("package", "--root", project, "--no-deps")
    assert proc.returncode == 1
    assert "noSuchField" in proc.stderr
    assert not (project / "build" / "lambda.zip").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(project: Path) -> None:
    proc = generator("package", "--root", project, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    # THEN the pip command targets the Lambda platform of project.yaml (python3.12, x86_64)
    for part in (
        "would write",
        "registry.json at the zip root",
        "--platform manylinux2014_x86_64",
        "--python-version 3.12",
        "--implementation cp",
        "--only-binary=:all:",
        "psycopg[binary]",
    ):
        assert part in proc.stdout, part
    assert "boto3" not in proc.stdout
    assert not (project / "build" / "lambda.zip").exists()


def test_an_unwritable_destination_exits_4(project: Path) -> None:
    # GIVEN a directory where the zip should go
    (project / "build" / "lambda.zip").mkdir()
    proc = generator("package", "--root", project, "--no-deps")
    assert proc.returncode == 4, proc.stderr
    assert "could not write" in proc.stderr
    assert [p.name for p in (project / "build").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("command", ["package", "override"])
def test_help(command: str) -> None:
    proc = generator(command, "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"usage: python -m generator {command} ")
    assert "--dry-run" in proc.stdout


# --- units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runtime", "arch", "platform", "version"),
    [
        ("python3.12", "x86_64", "manylinux2014_x86_64", "3.12"),
        ("python3.13", "arm64", "manylinux2014_aarch64", "3.13"),
    ],
)
def test_pip_installs_for_the_lambda_platform(runtime: str, arch: str, platform: str, version: str) -> None:
    target = pkg.Target.for_lambda(runtime, arch)
    cmd = pkg.pip_command(Path("/t"), pkg.requirements("mysql"), target)
    flags: dict[str, Any] = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert flags["--platform"] == platform
    assert flags["--python-version"] == version
    assert flags["--implementation"] == "cp"
    assert "--only-binary=:all:" in cmd and "--no-compile" in cmd
    assert [c for c in cmd if c.startswith(("sqlalchemy", "pymysql"))] == [
        pkg.SQLALCHEMY,
        "pymysql>=1.1,<2",
    ]


def test_local_platform_installs_for_this_interpreter() -> None:
    cmd = pkg.pip_command(Path("/t"), pkg.requirements("postgresql"), pkg.Target.local())
    assert "--platform" not in cmd and "--python-version" not in cmd
    assert cmd[:3] == [sys.executable, "-m", "pip"]


def test_a_runtime_module_importing_a_tool_package_is_refused(tmp_path: Path) -> None:
    # GIVEN a runtime whose handler imports the operator tools, which are not packaged
    source = tmp_path / "runtime"
    (source / "aws").mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "aws" / "__init__.py").write_text("")
    (source / "handler.py").write_text("def handler(e, c):\n    from synctools.aws import pump\n")
    # THEN packaging refuses it, naming the import
    with pytest.raises(pkg.PackageError, match=r"runtime/handler.py imports synctools.aws"):
        pkg.runtime_files(source)


def test_a_dependency_shadowing_the_runtime_is_refused(tmp_path: Path) -> None:
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "x.py").write_text("")
    with pytest.raises(pkg.PackageError, match="shadow"):
        pkg.dependency_files(tmp_path)


def test_an_unreachable_index_is_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN pip's only index on a closed loopback port, and no configured wheel directories
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # pip then reads no configuration file
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "1")  # each retry logs the connection error
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    # WHEN the dependencies are installed
    with pytest.raises(pkg.DependencyError) as exc:
        pkg.install_dependencies(tmp_path / "site", [pkg.SQLALCHEMY], pkg.Target.local())
    # THEN the failure says the index could not be reached (what the package test skips on)
    assert exc.value.offline, str(exc.value)
    assert str(exc.value).startswith("pip could not reach the package index")


def _with_tls(project: Path, tls: str) -> None:
    text = (project / "project.yaml").read_text()
    assert "database:\n" in text
    (project / "project.yaml").write_text(text.replace("database:\n", f"database:\n  tls: {tls}\n", 1))


def test_the_ca_bundle_ships_in_the_zip_where_the_lambda_looks_for_it(project: Path) -> None:
    import zipfile

    from generator.load import load
    from runtime.tls import LAMBDA_ROOT

    # GIVEN project.yaml naming a CA bundle in the project
    (project / "certs").mkdir()
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (project / "certs" / "db-ca.pem").write_text(pem)
    _with_tls(project, "{ca_bundle: certs/db-ca.pem}")
    assert generator("build", "--root", project).returncode == 0
    # WHEN packaged
    proc = generator("package", "--root", project, "--no-deps")
    assert proc.returncode == 0, proc.stderr
    # THEN the file is at the zip root, and the Lambda's environment names it there, relative
    # to the folder holding runtime/
    with zipfile.ZipFile(project / "build" / "lambda.zip") as z:
        assert z.read("ca-bundle.pem").decode() == pem
    model = load(project).model
    assert model is not None and model.project.database.ca_bundle == "certs/db-ca.pem"
    env = json.loads((project / "build" / "terraform" / "lambda.tf.json").read_text())["resource"][
        "aws_lambda_function"
    ]["sync"]["environment"]["variables"]
    assert env["SYNC_DB_CA_BUNDLE"] == "ca-bundle.pem" and env["SYNC_DB_TLS"] == "verify-full"
    assert (LAMBDA_ROOT / "runtime").is_dir()  # the zip's layout: runtime/ beside ca-bundle.pem


@pytest.mark.parametrize(
    ("tls", "code", "message"),
    [
        ("{ca_bundle: certs/none.pem}", "tls-ca-bundle", "cannot read"),
        ("{ca_bundle: mappings/orders.yaml}", "tls-ca-bundle", "holds no PEM certificate"),
        ("{mode: require}", "tls-unverified", "is not verified"),
        ("{mode: 'off'}", "tls-unverified", "may not even be encrypted"),
    ],
)
def test_tls_settings_validate_refuses_or_warns_about(
    project: Path, tls: str, code: str, message: str
) -> None:
    from generator.load import load

    _with_tls(project, tls)
    found = [d for d in load(project).diagnostics.sorted() if d.code == code]
    assert len(found) == 1 and message in found[0].message, [d.render() for d in found]
    assert found[0].file == "project.yaml" and found[0].path.startswith("database.tls")
