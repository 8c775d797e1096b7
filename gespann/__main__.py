"""`python -m gespann` is the `gespann` command."""

from .cli import main

main()
