"""The sync Lambda's folder (runtime/) stands alone: it imports itself, the standard library,
SQLAlchemy and the database drivers, and boto3 only lazily (inside the function that reads the
database secret); never the generator or the tools."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "runtime"
ALLOWED = {"runtime", "sqlalchemy", "psycopg", "pymysql"}
LAZY_ONLY = {"boto3", "botocore"}


def _imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(top-level package, line, at module level) of every import; `if TYPE_CHECKING:` blocks
    are skipped (never run)."""
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for orelse in child.orelse:
                    visit(orelse, module_level)
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name.split(".")[0], child.lineno, module_level) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module.split(".")[0], child.lineno, module_level))
            inner = module_level and not isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            visit(child, inner)

    visit(tree, True)
    return out


def _offenders(folder: Path) -> list[str]:
    offenders = []
    for path in sorted(folder.rglob("*.py")):
        where = path.relative_to(folder.parent)
        for package, line, module_level in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if package in ALLOWED or package in sys.stdlib_module_names or package == "__future__":
                continue
            if package in LAZY_ONLY and not module_level:
                continue
            offenders.append(f"{where}:{line}: {package}{' (at import time)' if module_level else ''}")
    return offenders


def test_the_lambda_folder_imports_only_itself_the_stdlib_sqlalchemy_and_the_drivers() -> None:
    # GIVEN every module of the folder the Lambda ships
    # THEN each imports nothing else (boto3 only inside a function)
    assert _offenders(RUNTIME) == []


def test_the_check_sees_what_it_forbids(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "import boto3\nfrom generator import cli\nimport yaml\n\n"
        "def f():\n    import boto3\n    from synctools import x\n",
        encoding="utf-8",
    )
    found = [o.split(":", 2)[2].strip() for o in _offenders(tmp_path)]
    assert found == [
        "boto3 (at import time)",
        "generator (at import time)",
        "yaml (at import time)",
        "synctools",
    ]
