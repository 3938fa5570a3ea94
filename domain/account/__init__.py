"""Accounts, login identities, sessions and staff (DESIGN D4, D6; SEC-A-01..06)."""
