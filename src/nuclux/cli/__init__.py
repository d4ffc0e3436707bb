"""The ``nuclux`` command line: ``main.app`` (typer) and ``main.run`` (entry point)."""
