"""Litestar: HTTP in and out only. Receives its adapters from bootstrap (DESIGN §2)."""
