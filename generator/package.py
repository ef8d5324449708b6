"""The sync Lambda's deployment zip: `runtime/` (the whole folder: it holds only the Lambda), registry.json at the
zip root, and optionally SQLAlchemy plus the database driver, built for the Lambda platform.

The zip is deterministic: the same runtime sources, registry and installed dependencies give
the same bytes (entries sorted, timestamps 1980-01-01, permissions 0644 for files and 0755
for directories). It is written to a temporary file beside its destination, checked, then
renamed into place.

Byte-code: /var/task is read-only, so a zip without .pyc files compiles every module it
imports on each cold start (0.7 s instead of 0.3 s for the runtime, SQLAlchemy and psycopg on
the development machine). When the building interpreter is the target's Python version, every
module is compiled into __pycache__ as an unchecked-hash .pyc: no timestamp inside, so the
bytes depend on the source only. For another version a .pyc would never be read; none is added.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime import dialects
from runtime.aws_limits import LAMBDA_UNZIPPED_BYTES, LAMBDA_ZIP_DIRECT_UPLOAD_BYTES

REGISTRY = "registry.json"
CA_BUNDLE = "ca-bundle.pem"  # project.yaml database.tls.ca_bundle, at the zip root (SYNC_DB_CA_BUNDLE)
RUNTIME_PACKAGE = "runtime"
HANDLER_MODULE = "runtime/handler.py"

# Pinned ranges: what runtime/ is written and tested against (pyproject.toml). boto3 is not
# packaged: the Lambda Python runtime ships it, and the runtime imports it only to read the
# database secret.
SQLALCHEMY = "sqlalchemy>=2.0.30,<2.2"

# Lambda: architecture -> the manylinux platform tag pip installs wheels for. manylinux2014
# (glibc 2.17) runs on every Python runtime (Amazon Linux 2 and 2023).
PLATFORM_TAGS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}

# Fixed metadata of every entry.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644
DIR_MODE = 0o040755
_UNIX = 3  # ZipInfo.create_system: the mode bits in external_attr are Unix ones

# Lambda quotas (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html):
# a zip uploaded directly, as Terraform's `filename` does, up to 50 MB; unzipped 250 MB.

# What never goes into the zip: byte-code caches anywhere; tests and hidden files in runtime/
# (a dependency's files are kept as pip installed them: a wheel may rely on a dot-directory).
_CACHES = {"__pycache__"}
_SOURCE_ONLY = {"tests", "conftest.py"}
_BYTECODE = (".pyc", ".pyo")
# The packages beside the Lambda's: the zip does not hold them, so the Lambda's modules must
# not import them (tests/test_lambda_folder.py holds the source to that; this refuses a zip).
_NOT_PACKAGED = ("generator", "synctools")

# pip's messages when it could not talk to the index at all (as opposed to a resolution error).
_NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|ConnectTimeoutError|ReadTimeoutError|"
    r"ProxyError|Connection refused|Could not fetch URL|No route to host|nodename nor servname"
)


class PackageError(Exception):
    """The zip cannot be built as asked (a bad setting, a name clash)."""


class DependencyError(Exception):
    """pip failed; `offline` is true when it could not reach the package index."""

    def __init__(self, message: str, *, offline: bool) -> None:
        super().__init__(message)
        self.offline = offline


@dataclass(frozen=True)
class Target:
    """Where the dependencies will run: the Lambda platform, or this interpreter (tests)."""

    platform: str  # lambda | local
    python_version: str  # "3.12"
    architecture: str  # x86_64 | arm64 (lambda only)

    @staticmethod
    def for_lambda(runtime: str, architecture: str) -> Target:
        match = re.fullmatch(r"python(\d+\.\d+)", runtime)
        if not match:
            raise PackageError(f"lambda.runtime {runtime!r} is not a Python runtime (pythonX.Y)")
        if architecture not in PLATFORM_TAGS:
            raise PackageError(
                f"lambda.architecture {architecture!r} is not one of {', '.join(sorted(PLATFORM_TAGS))}"
            )
        return Target("lambda", match.group(1), architecture)

    @staticmethod
    def local() -> Target:
        return Target("local", f"{sys.version_info.major}.{sys.version_info.minor}", "")

    def describe(self) -> str:
        if self.platform == "local":
            return f"this interpreter (Python {self.python_version}), not the Lambda platform"
        return (
            f"Lambda Python {self.python_version} on {self.architecture} ({PLATFORM_TAGS[self.architecture]})"
        )


@dataclass(frozen=True)
class Summary:
    path: Path
    size: int
    files: int
    unzipped: int
    sha256: str
    dependencies: tuple[str, ...]


def requirements(dialect: str) -> tuple[str, ...]:
    """What the runtime imports beyond the standard library, for `dialect`'s driver."""
    try:
        driver = dialects.for_name(dialect).requirement  # each dialect names its own driver
    except dialects.UnknownDialect:
        driver = None
    if driver is None:
        raise PackageError(f"database.dialect {dialect!r} has no driver to package for the Lambda")
    return (SQLALCHEMY, driver)


def pip_command(target_dir: Path, reqs: Sequence[str], target: Target) -> list[str]:
    """The pip invocation that installs `reqs` into `target_dir` for `target`.

    --no-compile: byte-code would carry the install time, and a .pyc for another Python
    version than the runtime's is never used. pip's own configuration (index URL, certificates)
    is honoured: that is how a user reaches their index.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        str(target_dir),
        "--no-compile",
        "--no-input",
        "--disable-pip-version-check",
        "--only-binary=:all:",
    ]
    if target.platform == "lambda":
        cmd += [
            "--platform",
            PLATFORM_TAGS[target.architecture],
            "--python-version",
            target.python_version,
            "--implementation",
            "cp",
        ]
    return cmd + list(reqs)


def install_dependencies(target_dir: Path, reqs: Sequence[str], target: Target) -> None:
    """Run pip; raise DependencyError with its output's tail when it fails."""
    proc = subprocess.run(
        pip_command(target_dir, reqs, target),
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode == 0:
        return
    output = (proc.stdout + proc.stderr).strip()
    tail = "\n".join(output.splitlines()[-15:])
    offline = bool(_NETWORK_ERRORS.search(output))
    what = "pip could not reach the package index" if offline else f"pip failed (exit {proc.returncode})"
    raise DependencyError(f"{what} installing {', '.join(reqs)}:\n{tail}", offline=offline)


def runtime_dir() -> Path:
    """The `runtime` package's directory, found without importing it."""
    spec = importlib.util.find_spec(RUNTIME_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PackageError("the runtime package is not importable; install the project (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations)))


def _excluded(name: str, *, source: bool) -> bool:
    if name in _CACHES or name.endswith(_BYTECODE):
        return True
    return source and (name in _SOURCE_ONLY or name.startswith("."))


def _walk(root: Path, *, source: bool) -> Iterable[Path]:
    """Files under root (symlinks followed), relative to it, without byte-code caches;
    `source` also leaves out tests and hidden files."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        base = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not _excluded(d, source=source))
        for name in sorted(filenames):
            if not _excluded(name, source=source):
                yield base / name


def runtime_files(source: Path) -> dict[str, Path]:
    """Zip name -> file, for the whole runtime package: it holds only what the Lambda runs."""
    files = {}
    for rel in _walk(source, source=True):
        files[f"{RUNTIME_PACKAGE}/{rel.as_posix()}"] = source / rel
    if HANDLER_MODULE not in files:
        raise PackageError(f"{source} has no handler.py: not the sync runtime package")
    for name, path in files.items():
        if name.endswith(".py"):
            _refuse_tool_imports(name, path)
    return files


def _imported_modules(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _refuse_tool_imports(name: str, path: Path) -> None:
    """A packaged module importing the generator or the tools would fail in the Lambda only."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    for module in _imported_modules(tree):
        if module.split(".")[0] in _NOT_PACKAGED:
            raise PackageError(
                f"{name} imports {module}, which is not packaged (only runtime/ and its "
                f"dependencies are); the Lambda must not depend on {', '.join(_NOT_PACKAGED)}"
            )


def dependency_files(site: Path) -> dict[str, Path]:
    """Zip name -> file, for what pip installed (its bin/ scripts, which name the build
    interpreter in their #! line, are left out)."""
    files = {}
    for rel in _walk(site, source=False):
        if rel.parts[0] == "bin":
            continue
        name = rel.as_posix()
        if rel.parts[0] == RUNTIME_PACKAGE or name == REGISTRY:
            raise PackageError(f"a dependency installs {name!r}, which would shadow the sync runtime's")
        files[name] = site / rel
    return files


def _directories(names: Iterable[str]) -> set[str]:
    dirs = set()
    for name in names:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]) + "/")
    return dirs


def _info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.create_system = _UNIX
    info.external_attr = mode << 16
    if name.endswith("/"):
        info.external_attr |= 0x10  # the MS-DOS directory flag
        info.compress_type = zipfile.ZIP_STORED
    else:
        info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_zip(dest: Path, entries: dict[str, bytes | Path]) -> Summary:
    """Write `entries` (zip name -> content or file) to `dest` deterministically and atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        unzipped = 0
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", compresslevel=9) as zf:
            for name in sorted(set(entries) | _directories(entries)):
                if name.endswith("/"):
                    zf.writestr(_info(name, DIR_MODE), b"")
                    continue
                content = entries[name]
                data = content if isinstance(content, bytes) else content.read_bytes()
                unzipped += len(data)
                zf.writestr(_info(name, FILE_MODE), data)
        _verify(tmp, entries)
        os.chmod(tmp, 0o644)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        size = tmp.stat().st_size
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Summary(dest, size, len(entries), unzipped, digest, ())


def _verify(path: Path, entries: dict[str, bytes | Path]) -> None:
    """Read the written zip back: every CRC checks, and it holds exactly the expected files."""
    with zipfile.ZipFile(path) as zf:
        bad = zf.testzip()
        if bad is not None:
            raise PackageError(f"{path}: entry {bad} is corrupt")
        names = {n for n in zf.namelist() if not n.endswith("/")}
    if names != set(entries):
        raise PackageError(f"{path}: the zip does not hold the expected files")


def can_compile(target: Target) -> bool:
    """Whether this interpreter writes byte-code the target's Python reads."""
    return target.python_version == f"{sys.version_info.major}.{sys.version_info.minor}" and (
        sys.implementation.name == "cpython"
    )


_COMPILE_SCRIPT = """
import json, py_compile, sys
for source, cfile, dfile in json.load(sys.stdin):
    try:
        py_compile.compile(source, cfile=cfile, dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError as exc:
        print(f"not compiled: {dfile}: {exc.msg}", file=sys.stderr)
"""


def compile_entries(entries: dict[str, bytes | Path], workdir: Path) -> dict[str, Path]:
    """Zip name -> .pyc file for every .py entry, compiled in one fresh interpreter (so the
    marshalled code does not depend on this process's state). A module that does not compile
    (a dependency's file for another Python) is left as source."""
    jobs = []
    out: dict[str, Path] = {}
    for name, content in sorted(entries.items()):
        if not name.endswith(".py") or isinstance(content, bytes):
            continue
        cached = importlib.util.cache_from_source(name)
        cfile = workdir / cached
        jobs.append((str(content), str(cfile), name))
        out[cached] = cfile
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _COMPILE_SCRIPT],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise PackageError(f"compiling byte-code failed: {proc.stderr.strip()[-2000:]}")
    return {name: path for name, path in out.items() if path.is_file()}


def build_package(
    dest: Path,
    registry: bytes,
    *,
    source: Path | None = None,
    dependencies: Path | None = None,
    installed: tuple[str, ...] = (),
    compile_bytecode: bool = False,
    ca_bundle: Path | None = None,
) -> Summary:
    """The zip at `dest`: runtime/ from `source`, `registry` as registry.json, the files of
    the `dependencies` directory (a pip --target tree) at the root, the database's CA bundle
    as ca-bundle.pem, and with `compile_bytecode` a .pyc for every module (see can_compile)."""
    entries: dict[str, bytes | Path] = dict(runtime_files(source or runtime_dir()))
    if dependencies is not None:
        entries.update(dependency_files(dependencies))
    entries[REGISTRY] = registry
    if ca_bundle is not None:
        entries[CA_BUNDLE] = ca_bundle
    with tempfile.TemporaryDirectory(prefix="ddb-sql-sync-pyc-") as tmp:
        if compile_bytecode:
            entries.update(compile_entries(entries, Path(tmp)))
        summary = write_zip(dest, entries)
    return Summary(summary.path, summary.size, summary.files, summary.unzipped, summary.sha256, installed)


def size_warnings(summary: Summary) -> list[str]:
    out = []
    if summary.size > LAMBDA_ZIP_DIRECT_UPLOAD_BYTES:
        out.append(
            f"the zip is {summary.size:,} bytes, over Lambda's 50 MB limit for a direct upload "
            "(Terraform's `filename`): upload it to S3 and deploy from there"
        )
    if summary.unzipped > LAMBDA_UNZIPPED_BYTES:
        out.append(f"the unzipped package is {summary.unzipped:,} bytes, over Lambda's 250 MB limit")
    return out
