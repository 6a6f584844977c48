"""Adapters from frameworks' events to the tracker's public lifecycle.

One module per framework; each imports its framework itself and is installed by an
extra (``pip install 'exectrack[heartbeat]'`` for :mod:`.apscheduler`,
``'exectrack[server]'`` for :mod:`.asgi`). Nothing in the core imports these modules.
"""
