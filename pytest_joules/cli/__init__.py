"""The `joules` command. Each subcommand lives in its own module with two functions:

    add_parser(subparsers) -> argparse.ArgumentParser   # defines the subcommand's arguments
    run(args) -> int                                     # exit status

A JoulesError escaping `run` becomes one line on stderr and exit status 2: never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn, Sequence

from ..errors import JoulesError

#: subcommand name -> module under pytest_joules.cli
SUBCOMMANDS = {
    "fit": "fit",
    "sweetspot": "sweetspot",
    "sweep": "sweep",
    "calibrate": "calibrate",
    "doctor": "doctor",
    "check": "check",
    "compare": "compare",
    "export": "export",
    "list": "listing",
    "history": "history",
    "report": "report",
    "dashboard": "dashboard",
    "advise": "advise",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 as well; keep it to one line + usage
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="joules", description="Energy per output token of LLM inference: measure, fit, gate.")
    parser.add_argument("--version", action="version", version=f"pytest-joules {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = False  # bare `joules` prints the help (main), not "arguments are required"
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module}":
                continue  # subcommand not built yet
            raise
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:
        # the reader went away (`joules list | head -1`): not an error of the command. The exit
        # status is the command's own where it knew it before printing (compare --fail's verdict)
        _quiet_stdout()
        return int(getattr(args, "exit_status", 0))
    except SystemExit as exc:
        if not isinstance(exc.__context__, BrokenPipeError):
            raise
        # rich's Console meets the closed pipe itself and exits 1, which reads as compare --fail's
        # regression; the same status as a plain print's broken pipe instead
        return int(getattr(args, "exit_status", 0))
    except JoulesError as exc:
        print(f"joules {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"joules {args.command}: interrupted", file=sys.stderr)
        return 130


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush into the closed pipe does not
    print "Exception ignored ... BrokenPipeError" (the recipe of Python's signal module docs)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (captured): nothing will be flushed into a pipe
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
