"""`python -m runtime replay|sample|pump|consume|dlq`: the local tools (runtime/local/) and the
AWS tools (runtime/aws/). The Lambda handler never imports either; they live behind this entry
point only."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from runtime.local.cli import main as local_main

    return local_main(argv)


if __name__ == "__main__":
    sys.exit(main())
