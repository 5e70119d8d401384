"""``python -m runner.cli``: the ``gmrun`` command (how local runners start a tile's worker)."""

from runner.cli import main

main()
