"""`python -m daemon.cli`: the same entry point as the `segwatch` script."""

from daemon.cli.app import main

main()
