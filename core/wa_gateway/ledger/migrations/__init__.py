"""The ledger's Alembic migrations, shipped inside the package (`wa-gateway db upgrade`)."""
