"""Build-time side of ddb-sql-sync: mappings/*.yaml -> validated model -> build/ artifacts."""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
