"""Installing the project leaves build/, the generator's output, exactly as it was.

setuptools wrote build/lib and build/bdist.* into it on `pip install .`; the build backend is
now hatchling, which builds the wheel where the installer asks. (`pip install -e`, the README's
command, is run by CI, which then checks that build/ is unchanged.)
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Not part of the project: environments, caches, and what a run left in build/.
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", ".terraform", "*.zip"
)
# pip's words when the isolated build environment (the backend) could not be installed.
_NO_BACKEND = "to install build dependencies did not run successfully"


def hashes(directory: Path) -> dict[str, str]:
    """Every file under `directory` (relative path) -> its SHA-256."""
    return {
        path.relative_to(directory).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def pip_install(project: Path, target: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--no-input"]
        + ["--disable-pip-version-check", "--target", str(target), *extra, "."],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_pip_install_leaves_build_byte_identical(tmp_path: Path) -> None:
    # GIVEN a copy of the project and the hash of every file in its build/
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT, project, ignore=_NOT_COPIED)
    before = hashes(project / "build")
    assert "registry.json" in before
    everything = hashes(project)

    # WHEN pip installs it, not editable, as `pip install .` does (in an isolated build
    # environment); where the backend cannot be fetched, with the one the dev extras install
    target = tmp_path / "site"
    proc = pip_install(project, target)
    if proc.returncode != 0 and _NO_BACKEND in proc.stdout + proc.stderr:
        if importlib.util.find_spec("hatchling") is None:
            reason = "pip could not install the build backend (hatchling) and it is not installed here"
            print(reason)
            pytest.skip(reason)
        proc = pip_install(project, target, "--no-build-isolation")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # THEN build/ is byte-identical (nothing added, changed or removed), and so is the rest of
    # the project (no egg-info, no dist/)
    assert hashes(project / "build") == before
    assert hashes(project) == everything
    # and the installed packages carry their data files and the console script's entry point
    assert (target / "generator" / "schemas" / "mapping.schema.json").is_file()
    assert (target / "generator" / "templates" / "entity.md.j2").is_file()
    assert (target / "runtime" / "handler.py").is_file()
    (dist_info,) = target.glob("ddb_sql_sync-*.dist-info")
    assert "ddb-sql-sync = generator.cli:run" in (dist_info / "entry_points.txt").read_text(encoding="utf-8")
