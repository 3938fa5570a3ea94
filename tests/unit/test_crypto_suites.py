"""The ``intl`` and ``sm`` crypto suites and the keyring (DESIGN D5, SEC-K-02, SEC-K-03)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from gmssl import sm2
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.kernel.crypto import (
    BlindIndex,
    CryptoSuite,
    DecryptionError,
    Digest,
    FieldCipher,
    Mac,
    Signer,
    UnknownKeyError,
)
from integrations.crypto import SUITE_NAMES, Keyring, Suite, SuiteName, build_suite, generate_keyring_config
from integrations.crypto.intl import (
    AesGcmFieldCipher,
    EcdsaP256Signer,
    HmacSha256BlindIndex,
    HmacSha256Mac,
    Sha256Digest,
)
from integrations.crypto.keys import KEY_BYTES, b64url_decode
from integrations.crypto.sm import (
    SM2_N,
    HmacSm3BlindIndex,
    HmacSm3Mac,
    Sm2Signer,
    Sm3Digest,
    Sm4GcmFieldCipher,
    sm2_public_key,
    sm2_verify,
)

CONTEXT = "patient.id_number"

_OLD = bytes(range(32))
_NEW = bytes(range(100, 132))
_INDEX = bytes(range(200, 232))

KEYRING = Keyring(active_kid="k1", keys={"k1": _OLD}, index_key=_INDEX)
ROTATED = Keyring(active_kid="k2", keys={"k1": _OLD, "k2": _NEW}, index_key=_INDEX)
RETIRED = Keyring(active_kid="k2", keys={"k2": _NEW}, index_key=_INDEX)

SUITES: dict[str, CryptoSuite] = {name: build_suite(name, KEYRING) for name in SUITE_NAMES}
ROTATED_SUITES: dict[str, CryptoSuite] = {name: build_suite(name, ROTATED) for name in SUITE_NAMES}
RETIRED_SUITES: dict[str, CryptoSuite] = {name: build_suite(name, RETIRED) for name in SUITE_NAMES}

contexts = st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s)
suite_names = st.sampled_from(SUITE_NAMES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _flip(token: str, position: int) -> str:
    """``token`` with one bit of its decoded body flipped at ``position`` (modulo the body length)."""
    suite, kid, body = token.split(".")
    raw = bytearray(b64url_decode(body) or b"")
    raw[position % len(raw)] ^= 0x01
    return f"{suite}.{kid}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode('ascii')}"


# -- the port ---------------------------------------------------------------------------------------------


def test_both_suites_satisfy_the_crypto_port() -> None:
    """Checked by mypy: every component and the suite are assignable to the port protocols."""
    for name in SUITE_NAMES:
        suite: CryptoSuite = build_suite(name, KEYRING)
        assert isinstance(suite, Suite)
        assert suite.name == name
    intl_parts: tuple[FieldCipher, BlindIndex, Digest, Mac, Signer] = (
        AesGcmFieldCipher(KEYRING),
        HmacSha256BlindIndex(KEYRING),
        Sha256Digest(),
        HmacSha256Mac(KEYRING),
        EcdsaP256Signer(KEYRING),
    )
    sm_parts: tuple[FieldCipher, BlindIndex, Digest, Mac, Signer] = (
        Sm4GcmFieldCipher(KEYRING),
        HmacSm3BlindIndex(KEYRING),
        Sm3Digest(),
        HmacSm3Mac(KEYRING),
        Sm2Signer(KEYRING),
    )
    assert len(intl_parts) == len(sm_parts) == 5


def test_build_suite_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown crypto suite"):
        build_suite("rot13", KEYRING)  # type: ignore[arg-type]


def test_suite_algorithm_names() -> None:
    assert SUITES["intl"].digest.name == "sha256"
    assert SUITES["sm"].digest.name == "sm3"
    assert SUITES["intl"].signer.algorithm == "ecdsa-p256-sha256"
    assert SUITES["sm"].signer.algorithm == "sm2-sm3"


# -- field cipher -----------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(name=suite_names, plaintext=st.binary(max_size=512), context=contexts)
def test_round_trip_sec_k_02(name: SuiteName, plaintext: bytes, context: str) -> None:
    cipher = SUITES[name].cipher
    token = cipher.encrypt(plaintext, context=context)
    assert cipher.decrypt(token, context=context) == plaintext
    assert not cipher.needs_rotation(token)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_token_format(name: SuiteName) -> None:
    plaintext = b"110101199001011234"
    token = SUITES[name].cipher.encrypt(plaintext, context=CONTEXT)
    suite, kid, body = token.split(".")
    assert (suite, kid) == (name, "k1")
    assert "=" not in body
    raw = b64url_decode(body)
    assert raw is not None
    assert len(raw) == 12 + len(plaintext) + 16
    assert plaintext not in raw
    assert token.isascii()


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_encryption_is_randomised(name: SuiteName) -> None:
    cipher = SUITES[name].cipher
    first = cipher.encrypt(b"13812341234", context=CONTEXT)
    second = cipher.encrypt(b"13812341234", context=CONTEXT)
    assert first != second
    assert cipher.decrypt(first, context=CONTEXT) == cipher.decrypt(second, context=CONTEXT)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_empty_plaintext_round_trips(name: SuiteName) -> None:
    cipher = SUITES[name].cipher
    assert cipher.decrypt(cipher.encrypt(b"", context=CONTEXT), context=CONTEXT) == b""


@settings(max_examples=50, deadline=None)
@given(name=suite_names, plaintext=st.binary(max_size=64), context=contexts, other=contexts)
def test_wrong_context_fails_sec_k_02(name: SuiteName, plaintext: bytes, context: str, other: str) -> None:
    if context == other:
        return
    cipher = SUITES[name].cipher
    token = cipher.encrypt(plaintext, context=context)
    with pytest.raises(DecryptionError):
        cipher.decrypt(token, context=other)


@settings(max_examples=50, deadline=None)
@given(name=suite_names, plaintext=st.binary(max_size=64), position=st.integers(min_value=0))
def test_tampered_token_fails(name: SuiteName, plaintext: bytes, position: int) -> None:
    cipher = SUITES[name].cipher
    token = cipher.encrypt(plaintext, context=CONTEXT)
    with pytest.raises(DecryptionError):
        cipher.decrypt(_flip(token, position), context=CONTEXT)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_relabelled_key_id_fails(name: SuiteName) -> None:
    """A token moved to another configured key id fails: the key id is bound as associated data."""
    token = ROTATED_SUITES[name].cipher.encrypt(b"secret", context=CONTEXT)
    suite, _, body = token.split(".")
    with pytest.raises(DecryptionError):
        ROTATED_SUITES[name].cipher.decrypt(f"{suite}.k1.{body}", context=CONTEXT)


def test_cross_suite_tokens_fail() -> None:
    for source, target in (("intl", "sm"), ("sm", "intl")):
        token = SUITES[source].cipher.encrypt(b"secret", context=CONTEXT)
        with pytest.raises(DecryptionError):
            SUITES[target].cipher.decrypt(token, context=CONTEXT)
        relabelled = target + token[len(source) :]
        with pytest.raises(DecryptionError):
            SUITES[target].cipher.decrypt(relabelled, context=CONTEXT)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_unknown_key_id_fails(name: SuiteName) -> None:
    token = SUITES[name].cipher.encrypt(b"secret", context=CONTEXT)
    with pytest.raises(UnknownKeyError):
        RETIRED_SUITES[name].cipher.decrypt(token, context=CONTEXT)
    suite, _, body = token.split(".")
    with pytest.raises(UnknownKeyError):
        SUITES[name].cipher.decrypt(f"{suite}.nope.{body}", context=CONTEXT)


@pytest.mark.parametrize("name", SUITE_NAMES)
@pytest.mark.parametrize(
    "token",
    ["", "intl", "sm", "intl.k1", "sm.k1", "a.b.c.d", ".k1.AAAA", "{s}.k1.", "{s}.k1.!!!!", "{s}.k1.AAAA", "{s}.k.1.x"],
)
def test_malformed_tokens_fail(name: SuiteName, token: str) -> None:
    with pytest.raises(DecryptionError):
        SUITES[name].cipher.decrypt(token.format(s=name), context=CONTEXT)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_non_canonical_body_fails(name: SuiteName) -> None:
    token = SUITES[name].cipher.encrypt(b"x", context=CONTEXT)
    with pytest.raises(DecryptionError):
        SUITES[name].cipher.decrypt(token + "=", context=CONTEXT)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_errors_never_carry_plaintext(name: SuiteName) -> None:
    plaintext = "110101199001011234"
    token = SUITES[name].cipher.encrypt(plaintext.encode(), context=CONTEXT)
    for bad in (_flip(token, 20), token):
        with pytest.raises(DecryptionError) as caught:
            SUITES[name].cipher.decrypt(bad, context="patient.phone")
        assert plaintext not in str(caught.value)
        assert plaintext not in caught.value.detail


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_empty_context_is_refused(name: SuiteName) -> None:
    with pytest.raises(ValueError, match="context"):
        SUITES[name].cipher.encrypt(b"x", context="")


# -- rotation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_key_rotation_sec_k_02(name: SuiteName) -> None:
    old_token = SUITES[name].cipher.encrypt(b"13812341234", context=CONTEXT)
    rotated = ROTATED_SUITES[name].cipher

    assert rotated.needs_rotation(old_token)
    assert rotated.decrypt(old_token, context=CONTEXT) == b"13812341234"

    new_token = rotated.encrypt(b"13812341234", context=CONTEXT)
    assert new_token.split(".")[:2] == [name, "k2"]
    assert not rotated.needs_rotation(new_token)
    assert rotated.decrypt(new_token, context=CONTEXT) == b"13812341234"
    # The rewritten token survives retiring the old key; the old one does not.
    assert RETIRED_SUITES[name].cipher.decrypt(new_token, context=CONTEXT) == b"13812341234"
    with pytest.raises(UnknownKeyError):
        RETIRED_SUITES[name].cipher.decrypt(old_token, context=CONTEXT)


def test_needs_rotation_for_another_suite_and_malformed_tokens() -> None:
    token = SUITES["intl"].cipher.encrypt(b"x", context=CONTEXT)
    assert SUITES["sm"].cipher.needs_rotation(token)
    with pytest.raises(DecryptionError):
        SUITES["sm"].cipher.needs_rotation("not a token")


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_mac_and_signature_survive_rotation(name: SuiteName) -> None:
    tag = SUITES[name].mac.mac(b"record", context="audit")
    signature = SUITES[name].signer.sign(b"record")
    assert ROTATED_SUITES[name].mac.verify(b"record", tag, context="audit")
    assert ROTATED_SUITES[name].signer.verify(b"record", signature)
    assert ROTATED_SUITES[name].mac.mac(b"record", context="audit") != tag
    assert not RETIRED_SUITES[name].mac.verify(b"record", tag, context="audit")
    assert not RETIRED_SUITES[name].signer.verify(b"record", signature)


# -- blind index ------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(name=suite_names, value=st.text(max_size=40), context=contexts)
def test_blind_index_is_deterministic_and_stable_across_rotation(name: SuiteName, value: str, context: str) -> None:
    index = SUITES[name].blind_index.index(value, context=context)
    assert index == build_suite(name, KEYRING).blind_index.index(value, context=context)
    assert index == ROTATED_SUITES[name].blind_index.index(value, context=context)
    assert len(index) == 64
    assert int(index, 16) >= 0


def test_blind_index_differs_per_context_suite_and_key() -> None:
    value = "110101199001011234"
    indexes = {
        SUITES["intl"].blind_index.index(value, context="patient.id_number"),
        SUITES["intl"].blind_index.index(value, context="patient.phone"),
        SUITES["sm"].blind_index.index(value, context="patient.id_number"),
        SUITES["sm"].blind_index.index(value, context="patient.phone"),
        SUITES["intl"].blind_index.index(value + "X", context="patient.id_number"),
    }
    other = Keyring(active_kid="k1", keys={"k1": _OLD}, index_key=bytes(32))
    for name in SUITE_NAMES:
        indexes.add(build_suite(name, other).blind_index.index(value, context="patient.id_number"))
    assert len(indexes) == 7
    assert value not in "".join(indexes)


def test_blind_index_context_is_not_ambiguous() -> None:
    index = SUITES["sm"].blind_index
    assert index.index("bc", context="a") != index.index("c", context="ab")


# -- digest, mac ------------------------------------------------------------------------------------------


def test_digests() -> None:
    assert SUITES["intl"].digest.digest(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert SUITES["sm"].digest.digest(b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )


@settings(max_examples=50, deadline=None)
@given(name=suite_names, data=st.binary(max_size=256), context=contexts)
def test_mac_verifies_and_binds_context_sec_k_03(name: SuiteName, data: bytes, context: str) -> None:
    mac = SUITES[name].mac
    tag = mac.mac(data, context=context)
    assert len(tag) == 32
    assert mac.verify(data, tag, context=context)
    assert not mac.verify(data + b"\x00", tag, context=context)
    assert not mac.verify(data, tag, context=context + "x")
    assert not mac.verify(data, bytes([tag[0] ^ 1]) + tag[1:], context=context)
    assert not mac.verify(data, tag[:-1], context=context)
    assert not mac.verify(data, b"", context=context)


def test_mac_differs_per_suite() -> None:
    assert SUITES["intl"].mac.mac(b"x", context="c") != SUITES["sm"].mac.mac(b"x", context="c")


# -- signer -----------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(name=suite_names, data=st.binary(max_size=256))
def test_signer_sign_verify_sec_k_03(name: SuiteName, data: bytes) -> None:
    signer = SUITES[name].signer
    signature = signer.sign(data)
    assert signature[0] == 0x30  # DER SEQUENCE
    assert signer.verify(data, signature)
    assert not signer.verify(data + b"!", signature)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_signer_rejects_tampered_and_garbage_signatures(name: SuiteName) -> None:
    signer = SUITES[name].signer
    signature = signer.sign(b"prescription")
    r, s = decode_dss_signature(signature)
    for bad in (
        b"",
        b"\x30\x00",
        b"not a signature",
        signature[:-1],
        signature + b"\x00",
        encode_dss_signature(r, s ^ 1),
        encode_dss_signature(r ^ 1, s),
        encode_dss_signature(0, s),
        encode_dss_signature(r, 0),
        encode_dss_signature(s, r),
    ):
        assert not signer.verify(b"prescription", bad)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_signing_key_is_derived_deterministically(name: SuiteName) -> None:
    first = build_suite(name, KEYRING).signer
    second = build_suite(name, KEYRING).signer
    assert isinstance(first, EcdsaP256Signer | Sm2Signer)
    assert isinstance(second, EcdsaP256Signer | Sm2Signer)
    assert first.public_key() == second.public_key()
    assert len(first.public_key()) == 65
    assert first.public_key()[0] == 4
    assert second.verify(b"data", first.sign(b"data"))
    other = build_suite(name, RETIRED).signer
    assert isinstance(other, EcdsaP256Signer | Sm2Signer)
    assert other.public_key() != first.public_key()
    with pytest.raises(UnknownKeyError):
        first.public_key("nope")


def test_suites_derive_different_signing_keys() -> None:
    intl_signer = EcdsaP256Signer(KEYRING)
    sm_signer = Sm2Signer(KEYRING)
    assert intl_signer.public_key() != sm_signer.public_key()
    assert not sm_signer.verify(b"data", intl_signer.sign(b"data"))


def test_sm2_signatures_verify_under_the_public_key() -> None:
    signer = Sm2Signer(KEYRING)
    signature = signer.sign(b"prescription")
    assert sm2_verify(signer.public_key(), b"prescription", signature)
    assert not sm2_verify(signer.public_key(), b"prescriptioN", signature)
    assert not sm2_verify(Sm2Signer(RETIRED).public_key(), b"prescription", signature)
    assert not sm2_verify(b"\x04" + bytes(64), b"prescription", signature)


def test_sm2_nonce_does_not_come_from_gmssl(monkeypatch: pytest.MonkeyPatch) -> None:
    """gmssl draws its default nonce from ``random``; signing must pass a nonce from ``secrets``."""

    def refuse(_: int) -> str:
        raise AssertionError("gmssl's nonce source was used")

    monkeypatch.setattr(sm2.func, "random_hex", refuse)
    signer = Sm2Signer(KEYRING)
    assert signer.verify(b"x", signer.sign(b"x"))


def test_sm2_public_key_starting_with_04_is_handled() -> None:
    """11·G has an x coordinate starting with 0x04, which gmssl's constructor would strip."""
    public = sm2_public_key(11)
    assert public[:2] == b"\x04\x04"
    engine = sm2.CryptSM2(private_key=f"{11:064x}", public_key="")
    engine.public_key = public[1:].hex()
    raw = engine.sign_with_sm3(b"data", f"{12345:064x}")
    signature = encode_dss_signature(int(raw[:64], 16), int(raw[64:], 16))
    assert sm2_verify(public, b"data", signature)


def test_sm2_private_key_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        sm2_public_key(0)
    with pytest.raises(ValueError, match="out of range"):
        sm2_public_key(SM2_N - 1)


# -- keyring ----------------------------------------------------------------------------------------------


def test_keyring_from_config_accepts_standard_and_urlsafe_base64() -> None:
    key = bytes([0xFB, 0xFF] * 16)  # encodes with '+' and '/' in the standard alphabet
    standard = base64.b64encode(key).decode()
    urlsafe = base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert "+" in standard or "/" in standard
    keyring = Keyring.from_config("a", {"a": standard, "b": urlsafe}, _b64(_INDEX))
    assert keyring.keys == {"a": key, "b": key}
    assert keyring.active_key == key
    assert keyring.index_key == _INDEX


def test_keyring_from_generated_config() -> None:
    first = generate_keyring_config()
    second = generate_keyring_config("k2025")
    assert first["keys"] != second["keys"]
    assert second["active_kid"] == "k2025"
    keyring = Keyring.from_config(**first)
    assert keyring.active_kid == "k1"
    assert len(keyring.active_key) == KEY_BYTES
    assert keyring.index_key != keyring.active_key
    suite = build_suite("sm", keyring)
    assert suite.cipher.decrypt(suite.cipher.encrypt(b"x", context="c"), context="c") == b"x"


@pytest.mark.parametrize(
    ("active", "keys", "index", "message"),
    [
        ("k9", {"k1": _b64(_OLD)}, _b64(_INDEX), "active key id 'k9'"),
        ("k1", {}, _b64(_INDEX), "no encryption keys"),
        ("k1", {"k1": _b64(_OLD[:16])}, _b64(_INDEX), "key 'k1' must decode to 32 bytes, got 16"),
        ("k1", {"k1": "not base64!"}, _b64(_INDEX), "key 'k1' is not valid base64"),
        ("k1", {"k1": ""}, _b64(_INDEX), "key 'k1' is empty"),
        ("k1", {"k1": _b64(_OLD)}, _b64(_INDEX + b"x"), "index key must decode to 32 bytes, got 33"),
        ("k1", {"k1": _b64(_OLD)}, "%%%", "index key is not valid base64"),
        ("k1", {"k1": _b64(_OLD)}, _b64(_OLD), "index key must differ"),
        ("k.1", {"k.1": _b64(_OLD)}, _b64(_INDEX), "key id 'k.1' must be"),
    ],
)
def test_keyring_config_errors_are_clear(active: str, keys: dict[str, str], index: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        Keyring.from_config(active, keys, index)
    for value in (*keys.values(), index):
        if len(value) > 4:
            assert value not in str(caught.value)


def test_keyring_repr_hides_key_material() -> None:
    keyring = Keyring.from_config("k1", {"k1": _b64(_OLD)}, _b64(_INDEX))
    text = repr(keyring)
    assert text == "Keyring(active_kid='k1')"
    assert _b64(_OLD) not in text
    assert repr(_OLD) not in text


def test_keyring_is_immutable() -> None:
    source = {"k1": _OLD}
    keyring = Keyring(active_kid="k1", keys=source, index_key=_INDEX)
    source["k2"] = _NEW
    assert set(keyring.keys) == {"k1"}
    with pytest.raises(TypeError):
        keyring.keys["k2"] = _NEW  # type: ignore[index]
    assert keyring.key("k1") == _OLD
    with pytest.raises(UnknownKeyError):
        keyring.key("k2")


def test_keyring_rejects_bad_raw_keys() -> None:
    with pytest.raises(ValueError, match="key 'k1' must be 32 bytes"):
        Keyring(active_kid="k1", keys={"k1": _OLD[:31]}, index_key=_INDEX)
    with pytest.raises(ValueError, match="key 'k1' must be 32 bytes"):
        Keyring(active_kid="k1", keys={"k1": "x" * 32}, index_key=_INDEX)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="index key must be 32 bytes"):
        Keyring(active_kid="k1", keys={"k1": _OLD}, index_key=b"")
    with pytest.raises(ValueError, match="active key id 'k2'"):
        Keyring(active_kid="k2", keys={"k1": _OLD}, index_key=_INDEX)
