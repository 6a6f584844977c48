"""``python -m exectrack`` runs the CLI."""

from exectrack.cli import main

raise SystemExit(main())
