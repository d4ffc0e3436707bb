"""``python -m nuclux``: the same as the ``nuclux`` command."""

from nuclux.cli.main import run

run()
