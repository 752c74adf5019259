"""``python -m bridge`` is the ``bridge`` command."""

from bridge.app.cli import main

main()
