"""The exectrack exception tree.

::

    ExectrackError
    ├── InvalidArgumentError (also ValueError)  bad source, status, cursor, time, metadata
    ├── ConfigError                             a bad database URL or environment value
    ├── StoreError                              anything the database did; the driver's
    │   │                                       exception is chained as ``__cause__``
    │   ├── StoreUnavailableError               transient: locked, busy, connection lost
    │   └── SchemaError                         schema missing, damaged or unknown
    │       └── SchemaTooNewError               the database was migrated by newer code
    └── DriverMissingError (also ImportError)   an optional driver is not installed

Nothing above the store sees a raw driver error. Tracking failures never reach the
host application unless strict mode is on (``EXECTRACK_STRICT=1``).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DriverMissingError",
    "ExectrackError",
    "InvalidArgumentError",
    "SchemaError",
    "SchemaTooNewError",
    "StoreError",
    "StoreUnavailableError",
]


class ExectrackError(Exception):
    """Base class of every exception exectrack raises on purpose."""


class InvalidArgumentError(ExectrackError, ValueError):
    """An argument is not acceptable; the message says which and what is allowed."""


class ConfigError(ExectrackError):
    """A database URL or an ``EXECTRACK_*`` environment value cannot be used."""


class StoreError(ExectrackError):
    """The store failed; the driver's exception is the ``__cause__``."""


class StoreUnavailableError(StoreError):
    """A transient store failure (locked, busy, connection lost); retrying may help."""


class SchemaError(StoreError):
    """The database schema is missing, damaged, or not one this code can use."""


class SchemaTooNewError(SchemaError):
    """The database was migrated by a newer exectrack than this one."""


class DriverMissingError(ExectrackError, ImportError):
    """An optional database driver is not installed; the message names the extra."""
