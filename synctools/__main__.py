"""`python -m synctools replay|sample|pump|consume|dlq`: the local tools (synctools/local/) and the
AWS tools (synctools/aws/). The Lambda handler never imports either; they live behind this entry
point only."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from synctools.local.cli import main as local_main

    return local_main(argv)


if __name__ == "__main__":
    sys.exit(main())
