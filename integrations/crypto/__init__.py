"""Crypto suites behind :mod:`domain.kernel.crypto` (DESIGN D5): ``intl`` and ``sm``."""

from __future__ import annotations

from integrations.crypto.keys import Keyring, KeyringConfig, generate_keyring_config
from integrations.crypto.suite import SUITE_NAMES, Suite, SuiteName, build_suite

__all__ = [
    "SUITE_NAMES",
    "Keyring",
    "KeyringConfig",
    "Suite",
    "SuiteName",
    "build_suite",
    "generate_keyring_config",
]
