"""Judge checkov's findings on the generated Terraform against the exceptions file
(.ci/checkov.yaml): run by .ci/checkov with the Python of checkov's own virtual environment.

Why a gate of our own rather than checkov's `skip-check`: checkov skips a check for the whole
scan, so a skipped check would also hide the same failure on a block added later, and its
inline suppressions are comments, which Terraform JSON cannot hold. Here a failure is excused
only for the blocks its exception names, and only with a reason.

Several directories may be scanned in one run (the bundled build, and the bundled project with
every option on): an exception stands while it excuses a failure in any of them.

Exit status: 0 when every failed check is excused; 1 when one is not, when an exception
excuses nothing any more (the check passes now: remove it), or when checkov could not read a
file that is not listed under `unreadable`; 2 when checkov itself did not run.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml  # checkov's own dependency, present in its environment


def scan(directory: Path) -> dict[str, Any]:
    checkov = Path(sys.executable).parent / "checkov"
    proc = subprocess.run(
        [str(checkov), "--directory", str(directory), "--framework", "terraform_json", "--skip-download"]
        + ["--output", "json", "--compact"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        print(f"checkov did not run (exit {proc.returncode}): see above", file=sys.stderr)
        sys.exit(2)
    return report[0] if isinstance(report, list) else report


def load_config(path: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The exceptions ({check, blocks, reason}) and the unreadable files ({file: reason}),
    each refused without its reason."""
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    exceptions = config.get("exceptions") or []
    for i, e in enumerate(exceptions):
        if not (e.get("check") and e.get("blocks") and str(e.get("reason", "")).strip()):
            sys.exit(f"{path}: exceptions[{i}] needs check, blocks and a reason")
    unreadable = {}
    for i, u in enumerate(config.get("unreadable") or []):
        if not (u.get("file") and str(u.get("reason", "")).strip()):
            sys.exit(f"{path}: unreadable[{i}] needs file and a reason")
        unreadable[u["file"]] = u["reason"]
    return exceptions, unreadable


def main(config_path: Path, directories: list[Path]) -> int:
    """Scan each directory; an exception stands when it excuses a failure in any of them."""
    exceptions, unreadable = load_config(config_path)
    problems: list[str] = []
    used: set[tuple[int, str]] = set()
    unread_anywhere: set[str] = set()
    for directory in directories:
        report = scan(directory)
        results = report.get("results", {})
        failed = results.get("failed_checks", [])
        summary = report.get("summary", {})
        excused = 0
        for f in failed:
            block = f"{f['file_path'].lstrip('/')}:{f['resource']}"
            lines = "-".join(map(str, f.get("file_line_range") or []))
            match = next(
                (
                    (i, pattern)
                    for i, e in enumerate(exceptions)
                    if e["check"] == f["check_id"]
                    for pattern in e["blocks"]
                    if fnmatch.fnmatchcase(block, pattern)
                ),
                None,
            )
            if match is None:
                problems.append(
                    f"{f['check_id']} {f['check_name']}: {directory}/{block} (lines {lines}) fails and is not "
                    f"excused: fix the generator, or list it in {config_path} with its reason"
                )
            else:
                used.add(match)
                excused += 1
        parsed_badly = {Path(p).name for p in results.get("parsing_errors", [])}
        unread_anywhere |= parsed_badly
        for name in sorted(parsed_badly - unreadable.keys()):
            problems.append(
                f"checkov could not read {directory}/{name}: its checks did not run; list it under unreadable with why"
            )
        print(
            f"checkov {summary.get('checkov_version', '?')} on {directory}: {summary.get('passed', 0)} passed, "
            f"{len(failed)} failed ({excused} excused with a reason by {config_path}), "
            f"{len(parsed_badly)} file(s) unread ({', '.join(sorted(parsed_badly)) or 'none'})"
        )
    for i, e in enumerate(exceptions):
        for pattern in e["blocks"]:
            if (i, pattern) not in used:
                problems.append(
                    f"{config_path}: {e['check']} on {pattern} is excused but fails nowhere any more: remove it"
                )
    for name in sorted(unreadable.keys() - unread_anywhere):
        problems.append(f"{config_path}: {name} is listed as unreadable but checkov read it: remove it")
    for p in problems:
        print(f"  problem: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: checkov_gate.py EXCEPTIONS_YAML TERRAFORM_DIR [TERRAFORM_DIR ...]")
    sys.exit(main(Path(sys.argv[1]), [Path(d) for d in sys.argv[2:]]))
