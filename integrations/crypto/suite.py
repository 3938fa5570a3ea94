"""Choose a crypto suite by name (DESIGN D5: ``HSP_CRYPTO__SUITE``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from domain.kernel.crypto import BlindIndex, CryptoSuite, Digest, FieldCipher, Mac, Signer
from integrations.crypto import intl, sm
from integrations.crypto.keys import Keyring

SuiteName = Literal["intl", "sm"]

SUITE_NAMES: tuple[SuiteName, ...] = ("intl", "sm")


@dataclass(slots=True, eq=False)
class Suite:
    """One suite's primitives, satisfying :class:`domain.kernel.crypto.CryptoSuite`.

    Not frozen: the port declares plain attributes, which a frozen dataclass would not satisfy.
    """

    name: str
    cipher: FieldCipher
    blind_index: BlindIndex
    digest: Digest
    mac: Mac
    signer: Signer


def build_suite(name: SuiteName, keyring: Keyring) -> CryptoSuite:
    """The ``intl`` or ``sm`` suite over ``keyring``."""
    if name == "intl":
        return Suite(
            name=intl.SUITE,
            cipher=intl.AesGcmFieldCipher(keyring),
            blind_index=intl.HmacSha256BlindIndex(keyring),
            digest=intl.Sha256Digest(),
            mac=intl.HmacSha256Mac(keyring),
            signer=intl.EcdsaP256Signer(keyring),
        )
    if name == "sm":
        return Suite(
            name=sm.SUITE,
            cipher=sm.Sm4GcmFieldCipher(keyring),
            blind_index=sm.HmacSm3BlindIndex(keyring),
            digest=sm.Sm3Digest(),
            mac=sm.HmacSm3Mac(keyring),
            signer=sm.Sm2Signer(keyring),
        )
    raise ValueError(f"unknown crypto suite {name!r}; expected one of {', '.join(SUITE_NAMES)}")
