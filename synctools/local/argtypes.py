"""The conventions of the one command line (`ddb-sql-sync COMMAND`, generator/cli.py) that every
command follows: argparse value types, the help form, the exit-code epilogue, the exit codes'
meaning and `--format text|json`. The tools' command modules (synctools/local/commands,
synctools/aws/commands) and the generator's commands share them."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T", int, float)


def _parsed(text: str, convert: Callable[[str], T], what: str) -> T:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive(text: str) -> int:
    n = _parsed(text, int, "an integer")
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def seconds(text: str) -> float:
    s = _parsed(text, float, "a number of seconds")
    if s < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return s


def probability(text: str) -> float:
    p = _parsed(text, float, "a number")
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in 0..1")
    return p


# --- conventions shared by every command -------------------------------------------------------

PRODUCT = "ddb-sql-sync"  # the name --version prints, on every entry point
LOCAL_DIR = ".sync-local"  # default home of what local runs write (git-ignored)

# What an exit code means, on every command (a command's --help lists the ones it returns).
EXIT_OK = 0  # done
EXIT_PROBLEMS = 1  # the command ran and found problems, or could not finish its work
EXIT_USAGE = 2  # bad command line or configuration
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as a shell reports it)


def add_format(parser: argparse.ArgumentParser, text: str, json: str) -> None:
    """`--format text|json`, on every command that reports results: what each form prints."""
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help=f"text: {text}; json: {json}"
    )


def usage_error(message: str) -> int:
    """Report a bad command line or configuration in one line on stderr; the exit code to return."""
    sys.stderr.write(f"error: {message}\n")
    return EXIT_USAGE


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's own "(default: X)" after each option's help; prose wrapped to the terminal, and
    an indented block (the exit-code epilogue) kept as written, as RawDescriptionHelpFormatter
    would. An option whose default is None or that is a flag gets no "(default: None)" /
    "(default: False)": its help says in words what applies without it."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith(" ") for line in lines[1:]):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(out)

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Paths, URLs and option names hold hyphens: wrap between words only.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0 or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def exit_codes(codes: dict[int, str]) -> str:
    """The epilogue every command's --help ends with: one line per exit code it can return."""
    width = max(len(str(code)) for code in codes)
    lines = ["exit codes:"]
    for code, meaning in codes.items():
        lines.append(
            textwrap.fill(
                meaning,
                width=79,
                initial_indent=f"  {code:>{width}}  ",
                subsequent_indent=" " * (width + 4),
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)


def local_output(path: str | Path) -> Path:
    """`path`, with the git-ignored folder of local outputs created when `path` lies in it."""
    path = Path(path)
    if LOCAL_DIR in path.parent.parts:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path
