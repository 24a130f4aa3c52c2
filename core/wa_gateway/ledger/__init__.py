"""The ledger: every notification's life in a database (DESIGN.md "The ledger").

- `urls`: DATABASE_URL (sqlite:///<path> or postgresql://…) to an async driver's URL.
- `models`: the tables, as SQLAlchemy 2 typed models.
- `engine`: the one async engine a process opens.
- `schema`: the database's revision against this package's migrations (`migrations/`,
  shipped inside the package so `wa-gateway db upgrade` works from a wheel).
- `prune`: delete what is older than WA_LEDGER_RETENTION_DAYS.

Importing this package imports nothing heavy: settings.py checks DATABASE_URL with `urls`.
"""
