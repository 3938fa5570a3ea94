"""The primitives under both crypto suites, pinned by published test vectors (DESIGN D5, SEC-K-02/03)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from gmssl import sm2

from integrations.crypto.intl import Sha256Digest
from integrations.crypto.sm import (
    SM2_A,
    SM2_B,
    SM2_GX,
    SM2_GY,
    SM2_N,
    SM2_P,
    Sm3Digest,
    Sm4Gcm,
    sm2_public_key,
    sm2_verify,
)


def _sm3(data: bytes) -> str:
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize().hex()


def test_sm3_abc() -> None:
    # GB/T 32905-2016 Appendix A, example 1.
    expected = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert _sm3(b"abc") == expected
    assert Sm3Digest().digest(b"abc").hex() == expected


def test_sm3_512_bit_message() -> None:
    # GB/T 32905-2016 Appendix A, example 2: "abcd" repeated 16 times.
    assert _sm3(b"abcd" * 16) == "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"


def test_sha256_abc() -> None:
    # FIPS 180-2 Appendix B.1 (one-block message "abc").
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert Sha256Digest().digest(b"abc").hex() == expected


def test_sm4_single_block() -> None:
    # GB/T 32907-2016 Appendix A, example 1: key = plaintext = 0123456789abcdeffedcba9876543210.
    # ECB on one block is the bare block cipher that SM4-GCM is built on.
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    encryptor = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()  # noqa: S305 - one block, a test vector
    assert (encryptor.update(key) + encryptor.finalize()).hex() == "681edf34d206965e86b3e94f536e4246"


def test_sm4_gcm() -> None:
    # RFC 8998 Appendix A.1 (SM4-GCM), run through the suite's own SM4-GCM wrapper.
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    nonce = bytes.fromhex("00001234567800000000ABCD")
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    plaintext = bytes.fromhex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
        "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
    )
    ciphertext = bytes.fromhex(
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
        "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    )
    tag = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")
    aead = Sm4Gcm(key)
    assert aead.encrypt(nonce, plaintext, aad) == ciphertext + tag
    assert aead.decrypt(nonce, ciphertext + tag, aad) == plaintext


def test_aes_256_gcm() -> None:
    # McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 13 and 14:
    # 256-bit zero key, 96-bit zero IV, no associated data.
    aead = AESGCM(bytes(32))
    assert aead.encrypt(bytes(12), b"", None).hex() == "530f8afbc74536b9a963b4f1c4cb738b"
    assert aead.encrypt(bytes(12), bytes(16), None).hex() == (
        "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919"
    )


def test_hmac_sha256() -> None:
    # RFC 4231 section 4.3, test case 2.
    mac = hmac.HMAC(b"Jefe", hashes.SHA256())
    mac.update(b"what do ya want for nothing?")
    assert mac.finalize().hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_hkdf_sha256() -> None:
    # RFC 5869 Appendix A.1, test case 1: the derivation under every intl subkey.
    okm = HKDF(algorithm=hashes.SHA256(), length=42, salt=bytes(range(13)), info=bytes(range(0xF0, 0xFA))).derive(
        b"\x0b" * 22
    )
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")


# GB/T 32918.5-2017 (GM/T 0003.5-2012) Appendix A: SM2 signature on the recommended curve, message
# "message digest", user ID 1234567812345678.
_SM2_PRIVATE = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
_SM2_PUBLIC = bytes.fromhex(
    "04"
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
_SM2_NONCE = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21"
_SM2_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
_SM2_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA


def test_sm2_curve_parameters_match_gmssl() -> None:
    table = sm2.default_ecc_table
    assert int(table["p"], 16) == SM2_P
    assert int(table["a"], 16) == SM2_A
    assert int(table["b"], 16) == SM2_B
    assert int(table["n"], 16) == SM2_N
    assert int(table["g"], 16) == (SM2_GX << 256) | SM2_GY


def test_sm2_public_key() -> None:
    assert sm2_public_key(_SM2_PRIVATE) == _SM2_PUBLIC


def test_sm2_sign_with_the_published_nonce() -> None:
    engine = sm2.CryptSM2(private_key=f"{_SM2_PRIVATE:064x}", public_key="")
    engine.public_key = _SM2_PUBLIC[1:].hex()
    assert engine.sign_with_sm3(b"message digest", _SM2_NONCE) == f"{_SM2_R:064x}{_SM2_S:064x}"


def test_sm2_verify() -> None:
    signature = encode_dss_signature(_SM2_R, _SM2_S)
    assert sm2_verify(_SM2_PUBLIC, b"message digest", signature)
    assert not sm2_verify(_SM2_PUBLIC, b"message digesT", signature)
    assert not sm2_verify(_SM2_PUBLIC, b"message digest", encode_dss_signature(_SM2_R, _SM2_S - 1))
