"""The runs panel and its read-only HTTP API, as an ASGI app (needs ``exectrack[server]``).

::

    from exectrack.server import create_app
    app = create_app(tracker)                 # serve it alone, or
    outer.mount("/runs", create_app(tracker))  # mount it in your own app

The core never imports this package.
"""

from __future__ import annotations

try:
    from exectrack.server._app import create_app
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from exectrack.errors import DriverMissingError

    raise DriverMissingError(
        f"exectrack.server needs FastAPI: pip install 'exectrack[server]' ({exc})"
    ) from exc

__all__ = ["create_app"]
