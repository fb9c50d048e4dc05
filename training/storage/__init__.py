"""Where the loop keeps things: the warehouse seam (DuckDB | PostgreSQL), the ops ledger, DVC data versions."""
