"""The ``livecart`` command line (docs/contract.md §5).

This module only defines the arguments and dispatches; each command lives in its own module and exposes
``main(args) -> int``. Errors livecart raises on purpose are printed as readable messages (one per config
problem), never as tracebacks; exit status 2 means bad usage or config (or a journal another process is
writing), 1 a runtime failure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from livecart import __version__, build
from livecart.core.errors import ConfigError, JournalLocked, LivecartError

#: command -> "module:function" taking the parsed args and returning an exit status.
COMMANDS = {
    "demo": "livecart.cli.demo:main",
    "run": "livecart.runtime.daemon:main",
    "parse": "livecart.cli.parse:main",
    "report": "livecart.cli.journal:report_main",
    "export": "livecart.cli.journal:export_main",
    "journal": "livecart.cli.journal:journal_main",
    "ctl": "livecart.runtime.control:ctl_main",
    "bench": "livecart.bench.__main__:cli_main",
    "cluster": "livecart.cli.cluster:main",
}


class _Version(argparse.Action):
    """``--version``: the build is found by importing the hot modules (the parser's tables take ~0.1 s), so
    only when asked, not on every command (``report`` and ``ctl`` need no parser)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(f"livecart {__version__} ({build()})")
        parser.exit()


def _path_arg(value: str) -> str:
    """A file or folder argument: an empty one (``--html ''``, a shell variable that was not set) is bad
    usage, not the current folder or a silent fallback."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must name a file or folder, not be empty")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livecart", description="Real-time live-chat order capture.")
    p.add_argument("--version", action=_Version, nargs=0, help="show the version and build, and exit")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for DEBUG)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="run a bundled sale end to end and show it live")
    d.add_argument("--dir", default=None, type=_path_arg,
                   help="where to write the demo's journal and export (default: a temp dir)")
    d.add_argument("--speed", type=float, default=None, help="replay speed (default: the demo's own pace)")
    d.add_argument("--plain", action="store_true", help="no live view; print progress lines instead")

    r = sub.add_parser("run", help="the daemon: adapters -> parser -> ledger -> journal until SIGINT/SIGTERM")
    r.add_argument("file", help="stream config (TOML)")
    r.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="a live summary line every few seconds on stderr (default: when stderr is a terminal)")

    pa = sub.add_parser("parse", help="parse JSON Lines comments from stdin (docs/contract.md §3)")
    pa.add_argument("--config", required=True, help="stream config (TOML) with the catalogue")

    rep = sub.add_parser("report", help="the state in the journal of FILE's stream")
    rep.add_argument("file", help="stream config (TOML)")
    how = rep.add_mutually_exclusive_group()  # one or the other: --json with --html used to drop --json silently
    how.add_argument("--json", action="store_true", help="print one JSON object (docs/contract.md §5)")
    how.add_argument("--html", metavar="OUT", default=None, type=_path_arg,
                     help="write the after-sale summary (the console's) as one self-contained HTML file")

    ex = sub.add_parser("export", help="one row per order for fulfilment")
    ex.add_argument("file", help="stream config (TOML)")
    ex.add_argument("--format", choices=("csv", "jsonl"), required=True)
    ex.add_argument("--output", "-o", default="-", type=_path_arg, help="file to write (default: stdout)")

    jn = sub.add_parser("journal", help="check or repair a journal file")
    jsub = jn.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    jv = jsub.add_parser("verify", help="check every batch and snapshot; exit 0 when whole, 1 when damaged")
    jv.add_argument("file", help="the journal (or the stream config whose [storage] path it is)")
    jr = jsub.add_parser("repair", help="keep a backup copy and cut the journal back to its last good batch")
    jr.add_argument("file", help="the journal (or the stream config whose [storage] path it is)")
    jr.add_argument("--cut", action="store_true",
                    help="cut back to the last good batch even when a whole snapshot past the damage still "
                         "carries the sale (the events after the damage then stay only in the backup)")

    c = sub.add_parser("ctl", help="host controls for a running daemon")
    c.add_argument("file", help="stream config (TOML) of the running stream")
    # Optional for argparse (whose message for a missing one would call the optional ARGS required too):
    # ctl_main says what is missing.
    c.add_argument("action", nargs="?", default="",
                   help="feature | restock | presale | limit | pay | cancel | pause | resume | status")
    c.add_argument("params", nargs="*", help="the action's arguments, e.g. 'restock egg-10 500'")
    c.add_argument("--key", default=None,
                   help="the control's key (8-64 letters, digits, '-', '_'): a control sent with a key the daemon "
                        "has applied is not applied again (default: a new one, printed when there is no answer)")
    c.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="when the daemon took the control but gave no answer (it died, or the network), send it "
                        "again with the same key for up to this long, so it is applied once (default 30)")

    cl = sub.add_parser("cluster", help="the sale's JetStream log: decider, standbys, log length, lag")
    cl.add_argument("what", choices=("status",), help="status")
    cl.add_argument("file", help="stream config (TOML) with [storage] backend = \"jetstream\"")
    cl.add_argument("--json", action="store_true", help="print one JSON object")

    b = sub.add_parser("bench", help="peak-traffic benchmarks (prints JSON)")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for python -m livecart.bench")
    return p


def _pass_through(argv: list[str], command: str = "bench") -> list[str]:
    """``livecart bench --cases x`` -> ``livecart bench -- --cases x``: argparse's REMAINDER does not take
    arguments that start with ``-`` when they come first, so they are marked as positional here."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            if arg == command and argv[i + 1:i + 2] != ["--"]:
                return [*argv[:i + 1], "--", *argv[i + 1:]]
            break
    return argv


def _ctl_options_first(argv: list[str]) -> list[str]:
    """``livecart ctl FILE --key K restock egg-10 5`` -> ``livecart ctl --key K FILE restock egg-10 5``: with
    positionals that may be absent (``action``), argparse takes none after an option in the middle."""
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if at is None or argv[at] != "ctl":
        return argv
    head, rest, moved = argv[:at + 1], [], []
    tail = iter(argv[at + 1:])
    for arg in tail:
        if arg in ("--key", "--wait"):
            moved += [arg, next(tail, "")]
        elif arg.startswith(("--key=", "--wait=")):
            moved.append(arg)
        else:
            rest.append(arg)
    return [*head, *moved, *rest]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_ctl_options_first(_pass_through(list(sys.argv[1:] if argv is None
                                                                           else argv))))
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module_name, func_name = COMMANDS[args.command].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"livecart {args.command}: not available in this build", file=sys.stderr)
        return 2
    try:
        status: int = getattr(module, func_name)(args)
        return status
    except ConfigError as exc:
        print(f"livecart {args.command}: the config has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except JournalLocked as exc:  # another process writes this journal: a usage problem, as a bad config is
        print(f"livecart {args.command}: {exc}", file=sys.stderr)
        return 2
    except LivecartError as exc:
        print(f"livecart {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`livecart export ... | head`): stop quietly, as a SIGPIPE'd tool would, and
        # keep Python from complaining again when it flushes stdout at exit.
        # (When stdout is not a real file, as under capture, there is nothing to flush into a closed pipe.)
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a file it was told to write or read: said plainly, not as a traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"livecart {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
