"""`python -m fetchcli` and the `fetchcli` command."""

import sys


def main() -> None:
    """Start the CLI; a Ctrl-C while the modules load exits 130 without a traceback."""
    try:
        from fetchcli.cli import main as cli_main
    except KeyboardInterrupt:
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
