"""`python -m bmcore.cli` runs the `bmseg` command."""

from bmcore.cli import main

main()
