"""``python -m receiver …`` is the same as the ``pdrelay`` command."""

from receiver.cli import main

raise SystemExit(main())
