"""The business, pure: standard library only (DESIGN: dependency rules enforced by import-linter)."""
