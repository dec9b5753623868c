"""`python -m fetchcli`: the same as the `fetchcli` command."""

from fetchcli.cli import main

main()
