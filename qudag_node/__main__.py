"""``python -m qudag_node``: the same entry point as the ``qudag-node`` command."""

from qudag_node.cli import main

raise SystemExit(main())
