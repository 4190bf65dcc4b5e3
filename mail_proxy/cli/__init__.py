"""The ``mail-proxy`` command (cli.md). ``main()`` is the console-script entry point.

Start-up is kept light: ``--version`` and ``__complete`` skip typer's tree entirely, and every
heavy module (starlette, uvicorn, database drivers, httpx, cryptography, questionary) is
imported inside the command that needs it.
"""

from __future__ import annotations

import sys


def run(argv: list[str]) -> int:
    """Run one command line (without the program name); return the exit code."""
    for position, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            # bytes that are not UTF-8 reach us as lone surrogates (PEP 383), which no
            # database can store: say which argument, instead of failing deep inside
            from mail_proxy.cli.application import EXIT_USAGE, print_error

            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            print_error(f"argument {position} ({shown!r}) is not UTF-8 text",
                        "check the terminal's encoding (locale) or the bytes passed")
            return EXIT_USAGE
    if argv[:1] == ["--version"]:
        from mail_proxy import __version__

        print(f"mail-proxy {__version__}")
        return 0
    if argv[:1] == ["__complete"]:
        from mail_proxy.cli.completion import complete_main

        return complete_main(argv[1:])
    from mail_proxy.cli.application import guarded

    if argv in (["list"], ["list", "--json"]):
        # the most frequent command skips typer's parser (which loads pydantic: ~150 ms)
        from mail_proxy.cli.listing import show_list

        return guarded(lambda: show_list(argv == ["list", "--json"]))

    def body() -> int:
        from mail_proxy.cli.application import disk_world
        from mail_proxy.cli.grammar import GrammarError, resolve_argv
        from mail_proxy.cli.main_app import run_route

        try:
            route = resolve_argv(argv, disk_world())
        except GrammarError as exc:
            from mail_proxy.cli.application import CliExit

            raise CliExit(exc.exit_code, exc.message, exc.hint) from None
        return run_route(route)

    return guarded(body)


def main() -> None:
    sys.exit(run(sys.argv[1:]))
