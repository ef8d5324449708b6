"""The layers hold: `generator` may import `synctools` and `runtime`; `synctools` imports
`runtime`, never `generator` (the tools meet the generator only through the files in build/);
`runtime`, the sync Lambda, imports neither; inside `synctools`, `aws` builds on `local`,
never the reverse; and no package's modules import each other in a cycle. The contracts are
`[tool.importlinter]` in pyproject.toml, checked by import-linter (a dev dependency).
tests/test_lambda_folder.py holds the Lambda's folder to its third-party imports besides."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("generator", "synctools", "runtime")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` (the venv's) on the packages under `root`, with the repository's contracts."""
    script = Path(sys.executable).parent / "lint-imports"
    if not script.exists():
        pytest.fail(f"{script} not found: install the dev extras (pip install -e '.[dev]')")
    return subprocess.run(
        [str(script), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_packages_keep_their_layers_and_have_no_cycles() -> None:
    # GIVEN the repository  WHEN its imports are checked against the contracts
    done = lint_imports(ROOT)
    # THEN every contract is kept (the report names each import that breaks one)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 3 kept, 0 broken." in done.stdout


def test_the_contracts_catch_each_kind_of_violation(tmp_path: Path) -> None:
    # GIVEN a copy of the packages with one forbidden import of each kind
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    injected = {
        "synctools/local/fifo.py": "import generator.cli  # a tool importing the generator\n",
        "synctools/local/poller.py": "import synctools.aws.session  # local importing aws\n",
        "runtime/kinds.py": "import synctools.awsdocs  # the Lambda importing a tool\n",
        "generator/jsondump.py": "import generator.override  # override imports jsondump: a cycle\n",
    }
    for path, line in injected.items():
        with (tmp_path / path).open("a", encoding="utf-8") as fh:
            fh.write("\n" + line)
    # WHEN checked
    done = lint_imports(tmp_path)
    # THEN every contract is broken, each naming the import
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Contracts: 0 kept, 3 broken." in done.stdout, done.stdout
    for importer, imported in (
        ("synctools.local.fifo", "generator.cli"),
        ("synctools.local.poller", "synctools.aws.session"),
        ("runtime.kinds", "synctools.awsdocs"),
    ):
        assert f"{importer} -> {imported}" in done.stdout, done.stdout
    assert "No cycles are allowed in generator." in done.stdout, done.stdout
