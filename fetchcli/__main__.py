"""`python -m fetchcli` and the `fetchcli` command."""

import sys


def main() -> None:
    """Start the CLI; a Ctrl-C while the modules load exits 130 without a traceback."""
    if sys.argv[1:] == ["--version"]:
        # Asked often (scripts, package managers) and answerable without Typer, whose import
        # alone takes longer than Python's start: `fetchcli --version` prints as the CLI does.
        from fetchcli import __version__

        sys.stdout.write(f"fetchcli {__version__}\n")
        return
    try:
        from fetchcli.cli import main as cli_main
    except KeyboardInterrupt:
        sys.exit(130)  # ExitStatus.INTERRUPTED; not imported here: errors.py loads asyncio
    cli_main()


if __name__ == "__main__":
    main()
