"""Persistence of payment orders, attempts, refunds and channel events."""
