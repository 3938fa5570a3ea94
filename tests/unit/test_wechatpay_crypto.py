"""WeChat Pay API v3 crypto (protocols §2.1-§2.6, §9): published vectors, and the wechatpayv3 SDK as an oracle.

Vector sources (each test names the one it uses):

* ``wechatpay-apiv3/wechatpay-go`` ``utils/aes_test.go`` (commit 192b913): the AEAD_AES_GCM vector, 16-byte key.
* ``wechatpay-apiv3/wechatpay-go`` ``core/auth/signers/sha256withrsa_signer_test.go``: a signature of ``source``.
* ``wechatpay-apiv3/wechatpay-java`` ``core/src/test/resources/`` (commit 79e0875 / 167e9c4): the merchant key and
  certificate, the "WeChat Pay" key pair; ``core/src/test/java/.../model/TestConfig.java``: the APIv3 key, the
  serial numbers and a ``GET /v3/certificates`` answer; ``.../cipher/AeadAesCipherTest.java``: an AEAD vector;
  ``.../cipher/RSAVerifierTest.java``: the merchant key's signature of ``message``.

The oracle is ``wechatpayv3`` 2.0.4 (dev dependency only): ``utils.aes_decrypt``, ``utils.build_authorization``,
``utils.rsa_verify``, and ``WeChatPay.sign`` / ``WeChatPay.callback`` in public-key mode (nothing is fetched).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given
from hypothesis import strategies as st
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3 import utils as oracle

from domain.kernel.errors import AuthenticationError, ConflictError, UpstreamError, ValidationError
from integrations.resilience import Failure, is_transient
from integrations.wechat.pay import (
    AUTH_SCHEMA,
    PlatformKeyStore,
    WechatPayBadNotificationError,
    WechatPayBadResponseError,
    WechatPayBadSignatureError,
    WechatPayDecryptError,
    WechatPayParamError,
    WechatPayRejectedError,
    WechatPaySignatureProbeError,
    WechatPayStaleError,
    WechatPayUnavailableError,
    WechatPayUnknownSerialError,
    app_pay_sign,
    authorization_header,
    decrypt_resource,
    encrypt_resource,
    format_time,
    load_public_key,
    parse_certificates,
    parse_refund,
    parse_time,
    parse_transaction,
    pay_sign,
    request_message,
    response_message,
    sign_message,
    verify_notification,
    verify_signature,
    verify_signed_headers,
)

# --- published key material ------------------------------------------------------------------------------------

# wechatpay-apiv3/wechatpay-java core/src/test/resources/merchant_private_key.pem
JAVA_MERCHANT_PRIVATE_KEY = b"""-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCaZzehUwzcxdLg
Gn/UNryHLdX0yBvCqD0p92/BdlCIBi0dmzZzrfc+FF0xK70AP9b2+Ry5q+zXUU+d
PucJmgwABiZ+Lte+4euMxqPCEkdEu9lyiphalpoaOVPbmDNatzq9k5a/P454QRWM
dkLUJZCeoL9bF2Gn/2+wWEw3sL8zFFcOM8Jr1PdOLmAx+h7pf/87jcmXXCm+SZqw
5MtILKQi9zHWujYdMA0IcYNeQaNl1h/NUnungdIHKaaU+17wCXqTcZsipAGoqfqr
Hx/sr30ZszOdHYOvFNiB+rhEldBGSLWwSYE6LFkbP9GdQWKIQCip3E5dLj5ZFkDe
Ov4Hekf9AgMBAAECggEAEsVsqnS90hNMzUj7dHHJHsgQRGeVlGc+tFzsHcGEDd1u
W7SUfKDQN6BjKgiuvBqGyFTFzL7dltnAS5YroWu0fMZCpMGOIhs2N1Go8/2j43PQ
/k9iMVUw2/JPQxmwWJ2BCy4nvA1+hRkohQCVpFQCzn4tdWYUzcdMrUw2y+h1fkCQ
5MJn7iw9QHKQSeFeCl1/xq2PvOtiK/r1LsckyKNSSNgFEfxyWYaKbnK9OH+5rFKQ
QuI+fnAgE6QiLvmW0NqqZUSfqkLKi/FSWI13ns0H6OxjqpLX8VQ6+Cw5qq8fCuv2
gzkVk8A85ZTCQL/q9qDilt9uAE0bE924WU+n2zkBoQKBgQDQvIufN6fKpm27k4yx
RNV23fj9nojewaVqGg/3yuyiAu6w/yFcTXkGMVOicTYraX2mliHTIoyP8ywKGqqa
XS/Kk3tGD1K04KriPiFwWXU54+DmOJEyYoJlmXOm4BoZ1lW0z5HECC9eO/VPSDY+
zQdRYSCTdSHEgYuOGQSLPPwdrQKBgQC9XTrvkUkIthayc+4IhV6m4kT8uwzuoc3f
uaJhFFcpLKqzcpQBH71TYCXfqkucnO0no0sGerBB4HJQoVRK+jsdhNZhcw1JKLau
E+YlCSRLZ62vyzBTzLw1fnFBp82z1VZBujCrMP+DdwXBTsnkRaUtmDEG0s6YsCwd
fayF0PB9kQKBgAHc/P4R2ByV+brH6WSXsbQa7SMObDhY0CovS18x34Tes9S+okSZ
qG/mttFnY01l5qo7AthIoaqTSBxa+pTgKhIL2PjaICnfK4dTeKbxFXvLzfEgJiOl
/3X6ta6Sp4j9gcxYYfu2+v1DWcA4a8uJtvwB+vF2BTQk1+MP1BuOEs4NAoGBAK3y
+HKdOUPBUPQ4vk4hhaMzcz/d67FB/UYo1lrrPm3aVCxnckHeECKIzgG6A58oIEor
HH4lMcgyD5C1wiLl3mvtXKlD8M5lkfoy2VToIukJomk783bnOXTCY/N12+X4cTYL
fS2k4vK24RiD8b25pFRP26ly+MkV/FBS46pBFsmhAoGAOjfl2vGyJo8CRQ/HBLsS
Bw2VQgRvZU7mom1qa2SKA2VlsFz/aiBCcT8XEsTJxkVYkvbdfbyx2Z9kCbI6Y2cz
Z+M/0rQSRv/eOiBW7anBImZMg6WcYNfRfumkuNq+6fcCKKtZuyrd7ZFc0jTcVasI
xNJ1TM6J6kRQdn5O6Ot4ERw=
-----END PRIVATE KEY-----
"""

# wechatpay-apiv3/wechatpay-java core/src/test/resources/merchant_certificate.pem
JAVA_MERCHANT_CERTIFICATE = b"""-----BEGIN CERTIFICATE-----
MIIDrTCCApWgAwIBAgIUXxxy4qiTG3Ki4Tr43ukkces5cRUwDQYJKoZIhvcNAQEL
BQAwZjELMAkGA1UEBhMCQ04xEjAQBgNVBAgMCUd1YW5nZG9uZzERMA8GA1UEBwwI
c2hlbnpoZW4xITAfBgNVBAoMGEludGVybmV0IFdpZGdpdHMgUHR5IEx0ZDENMAsG
A1UEAwwEdGVzdDAeFw0yMjA1MTAwMTU3MTBaFw0yNTA1MDkwMTU3MTBaMGYxCzAJ
BgNVBAYTAkNOMRIwEAYDVQQIDAlHdWFuZ2RvbmcxETAPBgNVBAcMCHNoZW56aGVu
MSEwHwYDVQQKDBhJbnRlcm5ldCBXaWRnaXRzIFB0eSBMdGQxDTALBgNVBAMMBHRl
c3QwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQCaZzehUwzcxdLgGn/U
NryHLdX0yBvCqD0p92/BdlCIBi0dmzZzrfc+FF0xK70AP9b2+Ry5q+zXUU+dPucJ
mgwABiZ+Lte+4euMxqPCEkdEu9lyiphalpoaOVPbmDNatzq9k5a/P454QRWMdkLU
JZCeoL9bF2Gn/2+wWEw3sL8zFFcOM8Jr1PdOLmAx+h7pf/87jcmXXCm+SZqw5MtI
LKQi9zHWujYdMA0IcYNeQaNl1h/NUnungdIHKaaU+17wCXqTcZsipAGoqfqrHx/s
r30ZszOdHYOvFNiB+rhEldBGSLWwSYE6LFkbP9GdQWKIQCip3E5dLj5ZFkDeOv4H
ekf9AgMBAAGjUzBRMB0GA1UdDgQWBBQQicr3Vq+2NG2ykH0nxQxsct1RtTAfBgNV
HSMEGDAWgBQQicr3Vq+2NG2ykH0nxQxsct1RtTAPBgNVHRMBAf8EBTADAQH/MA0G
CSqGSIb3DQEBCwUAA4IBAQCH//ZlSAbc6xRlwKwwfbHMsVpAfo/p+Y3397Gi4sR8
RbsW6a3ezXhbiSGiJxDnerx9Cmp4K6U+D3Fl0N9K6CDWfwpGNiZvjmCxtM/wb7dM
u+4U0MXJGBcaePj4mtV/+qPxSWDCQ+PR5OcYRQnac9LfrffTuejQx5aw9FcD7egI
SYfgkZ/wgHyQcZyhh8s6DuigpEaVGMLLoWDZGJ3D+rt4kXk9y5+03KBB2vobyl6P
+PDgaYrlNR/UQMnKMdkgWp7bebmrcXte32/6FAwK3SuHZOSkteDtRCYhYfG5SGSr
go1ujfIK1zIFyPkKKnsgTUPJXwdC7LI+ZqJuWTyVTNj6
-----END CERTIFICATE-----
"""

# wechatpay-apiv3/wechatpay-java core/src/test/resources/wechat_pay_private_key.pem
JAVA_WECHAT_PAY_PRIVATE_KEY = b"""-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDioFW6YBq3ehY9
1ZW5Tbh+RNUnuGfou+nqbh0Kr53+3Ef0ENoTbO1S24BhNv5Z66BWgNkqmGtBfm2K
yZCr9o3+um3K8FfzEIDOyZcWxhdYiyIb1x1TgUqTbbtqSnli7d3vhNdSMPKKPANq
alDYdlO7w7oJ7K65hjEdylbRWSRK1ogdfO2p8EZXwr0QzrtxtKYL6er4pj44ij2s
dlSQKdwuusF0d/n0iT8p1GwRTUTPNSo97l1VgOy6I/FZC9B/zxKAq7/7/XlgWKaW
kTJr092QJxNXTHL85IiKwgUd6TqP0iLmMu+qFXBpJr7nOSGutKrj9vXSRcuOHcg+
xMN6di3vAgMBAAECggEAZZ1hwxc7c4BU/7XIlBViv49KiixXvxWe/WQRNoznCXMo
+ikiNyqUwR210yEu7A/ITXEprr03/l5bbKsTaN+87HYYK7IXpV+FefMPAYGhzyxX
h2cteZdT4oYFzlOFWRPx+uc0CuDyp4PgPjNce6qWwe6xeKi88WfXlxV2VxkiukDe
JRiqvfOypDbs2oD8fRupBZdIrb30/88ABu1wDg/16/jabCf/fCEyLMfyoZTzrN4E
Dq0rLK7HFbAiVTa2Nc0mfV42rOz/BdFLbt6JfDML1A9NrfM9vNUjLu0rFGVIFXFt
Dc7d88j/xZyM463mCW/Ttmn+uR/UjttumOVaOm6jkQKBgQD3N2ni7vFmlBnzXuy3
wYAPH10GZDJwo5qpHsnp6Gs/VHQspnCZFu+FQMI7lADP1fhqyf8X5HRS7NVkdus3
SagrisFp/y1j1SKZBH7e7citsGsmEMLtrKTyh148FNS8VLTFCgbzdNwiPi/5UBD1
nfzSLGPFdnDBngzvIb91MgrfvwKBgQDqraQf/HTZIqkj3eMwyLS9GwZpQXZ3fVpj
XOw1crPpEXd/s098C5ahgSxdXjAsAVrh79Buz48ze4BWhM5t/Oh3eLDDgsW57q3y
WoMxX/39CRMe+DyFIl1RtCB/86iz0cjsYxeCnuF35FWyBHco8qsFgbDXtORp3I0v
94nqWPs90QKBgHi/Ph6zaoEZ0VsHgEN4ZZ39Sah3hBN0NXRpL2HqPYffLico3FJJ
24+QQ85pycO51O4D327CDPb76nZ5hwWoGlW6HiIxmu/qCE4I3hbwuVXsl0kuYqdH
7gDvkV1zJz0denXLIf4DlAm9qhzxuHbfRb86IzktUoGfOt4J88PAP4NtAoGBALnu
oV6GUr3GbGPyZRI9spUxWD8EkqvRMVAQS0V9f3VlVVxj4NHTDKEhCtleyqPS3wKr
UmS5JigP7Xqe9j7GZhhiEwqUDbxmkoK1m8P+3ekgy3l6C9kfhPg60pUNo9f0mlBP
okznPJQU4KCOUSqsOTu/qTD+LQqCp4odgbOelFBBAoGAJyhBwb2NN7Pia4CdN2Pd
ukN4ZYWH+ImhwHbuMB0ap633oKci8WpCBn1gEsvI8MiSQLoXGyY0NULt+4/zY6Qe
X0BhQOC+abKri6mKSJt61cKhmYeNZvQon/Y9lKAGTuOS/a4NiebKytmyArbHKZ3J
4iWXZYuCrKtcQEU4nAY/FgA=
-----END PRIVATE KEY-----
"""

# wechatpay-apiv3/wechatpay-java core/src/test/resources/wechat_pay_public_key.pem
JAVA_WECHAT_PAY_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA4qBVumAat3oWPdWVuU24
fkTVJ7hn6Lvp6m4dCq+d/txH9BDaE2ztUtuAYTb+WeugVoDZKphrQX5tismQq/aN
/rptyvBX8xCAzsmXFsYXWIsiG9cdU4FKk227akp5Yu3d74TXUjDyijwDampQ2HZT
u8O6CeyuuYYxHcpW0VkkStaIHXztqfBGV8K9EM67cbSmC+nq+KY+OIo9rHZUkCnc
LrrBdHf59Ik/KdRsEU1EzzUqPe5dVYDsuiPxWQvQf88SgKu/+/15YFimlpEya9Pd
kCcTV0xy/OSIisIFHek6j9Ii5jLvqhVwaSa+5zkhrrSq4/b10kXLjh3IPsTDenYt
7wIDAQAB
-----END PUBLIC KEY-----
"""

# wechatpay-java TestConfig.java
JAVA_MERCHANT_ID = "1234567891"
JAVA_API_V3_KEY = b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"
JAVA_MERCHANT_SERIAL = "5F1C72E2A8931B72A2E13AF8DEE92471EB397115"
JAVA_WECHAT_PAY_SERIAL = "440024045C4A427599D09BB4E3DE0279F2E813FD"

# wechatpay-apiv3/wechatpay-go core/auth/signers/sha256withrsa_signer_test.go (testPrivateKeyStr; the file
# armours it as "TESTING KEY" and swaps the label back before loading)
GO_SIGNER_PRIVATE_KEY = b"""-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDZUJN33V+dSfvd
fL0Mu+39XrZNXFFMQSy1V15FpncHeV47SmV0TzTqZc7hHB0ddqAdDi8Z5k3TKqb7
6sOwYr5TcAfuR6PIPaleyE0/0KrljBum2Isa2Nyq7Dgc3ElBQ6YN4l/a+DpvKaz1
FSKmKrhLNskqokWVSlu4g8OlKlbPXQ9ibII14MZRQrrkTmHYHzfi7GXXM0thAKuR
0HNvyhTHBh4/lrYM3GaMvmWwkwvsMavnOex6+eioZHBOb1/EIZ/LzC6zuHArPpyW
3daGaZ1rtQB1vVzTyERAVVFsXXgBHvfFud3w3ShsJYk8JvMwK2RpJ5/gV0QSARcm
LDRUAlPzAgMBAAECggEBAMc7rDeUaXiWv6bMGbZ3BTXpg1FhdddnWUnYE8HfX/km
OFI7XtBHXcgYFpcjYz4D5787pcsk7ezPidAj58zqenuclmjKnUmT3pfbI5eCA2v4
C9HnbYDrmUPK1ZcADtka4D6ScDccpNYNa1g2TFHzkIrEa6H+q7S3O2fqxY/DRVtN
0JIXalBb8daaqL5QVzSmM2BMVnHy+YITJWIkP2a3pKs9C0W65JGDsnG0wVrHinHF
+cnhFZIbaPEI//DAFMc9NkrWOKVRTEgcCUxCFaHOZVNxDWZD7A2ZfJB2rK6eg//y
gEiFDR2h6mTaDowMB4YF2n2dsIO4/dCG8vPHI20jn4ECgYEA/ZGu6lEMlO0XZnam
AZGtiNgLcCfM/C2ZERZE7QTRPZH1WdK92Al9ndldsswFw4baJrJLCmghjF/iG4zi
hhBvLnOLksnZUfjdumxoHDWXo2QBWbI5QsWIE7AuTiWgWj1I7X4fCXSQf6i+M/y2
6TogQ7d0ANpZFyOkTNMn/tiJvLECgYEA22XqlamG/yfAGWery5KNH2DGlTIyd6xJ
WtJ9j3jU99lZ0bCQ5xhiBbU9ImxCi3zgTsoqLWgA/p00HhNFNoUcTl9ofc0G3zwT
D1y0ZzcnVKxGJdZ6ohW52V0hJStAigtjYAsUgjm7//FH7PiQDBDP1Wa6xSRkDQU/
aSbQxvEE8+MCgYEA3bb8krW7opyM0XL9RHH0oqsFlVO30Oit5lrqebS0oHl3Zsr2
ZGgoBlWBsEzk3UqUhTFwm/DhJLTSJ/TQPRkxnhQ5/mewNhS9C7yua7wQkzVmWN+V
YeUGTvDGDF6qDz12/vJAgSwDDRym8x4NcXD5tTw7mmNRcwIfL22SkysThIECgYAV
BgccoEoXWS/HP2/u6fQr9ZIR6eV8Ij5FPbZacTG3LlS1Cz5XZra95UgebFFUHHtC
EY1JHJY7z8SWvTH8r3Su7eWNaIAoFBGffzqqSVazfm6aYZsOvRY6BfqPHT3p/H1h
Tq6AbBffxrcltgvXnCTORjHPglU0CjSxVs7awW3AEQKBgB5WtaC8VLROM7rkfVIq
+RXqE5vtJfa3e3N7W3RqxKp4zHFAPfr82FK5CX2bppEaxY7SEZVvVInKDc5gKdG/
jWNRBmvvftZhY59PILHO2X5vO4FXh7suEjy6VIh0gsnK36mmRboYIBGsNuDHjXLe
BDa+8mDLkWu5nHEhOxy2JJZl
-----END PRIVATE KEY-----
"""

NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
PUB_KEY_ID = "PUB_KEY_ID_0114232701222024091100181918000001"


@cache
def _generated(label: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def generated_private_pem(label: str) -> bytes:
    return _generated(label).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# --- AEAD_AES_256_GCM --------------------------------------------------------------------------------------------


def test_aead_vector_of_wechatpay_go_with_its_16_byte_key() -> None:
    # wechatpay-go utils/aes_test.go "decrypt success": key testAPIv3Key0000 (16 bytes), the key length is
    # checked where settings are loaded, not by decrypt_resource.
    plain = decrypt_resource(
        b"testAPIv3Key0000",
        nonce="wCq51qZv4Yfg",
        associated_data="Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
        ciphertext="FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
    )
    assert plain == b"Hello World"


@pytest.mark.parametrize(
    ("key", "ciphertext"),
    [
        (b"testAPIv3Key0000", "invalid cipher"),  # "invalid base64 ciphertext"
        (b"testAPIv3Key0000", "SGVsbG8gV29ybGQK"),  # "invalid ciphertext"
        (b"testAPIv3Key1111", "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC"),  # "wrong aes key"
    ],
)
def test_aead_failures_of_wechatpay_go_raise_a_domain_error(key: bytes, ciphertext: str) -> None:
    # wechatpay-go utils/aes_test.go, the wantErr cases
    with pytest.raises(WechatPayDecryptError) as caught:
        decrypt_resource(
            key, nonce="wCq51qZv4Yfg", associated_data="Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8", ciphertext=ciphertext
        )
    assert isinstance(caught.value, ValidationError)
    assert caught.value.code == "wechatpay.decrypt_failed"


def test_a_key_aes_cannot_take_is_a_configuration_error() -> None:
    # wechatpay-go utils/aes_test.go "invalid aes key" ("not a aes key", 13 bytes): not a forged message
    with pytest.raises(ValueError, match="AESGCM key"):
        decrypt_resource(
            b"not a aes key",
            nonce="wCq51qZv4Yfg",
            associated_data="Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
            ciphertext="FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
        )


def test_aead_vector_of_wechatpay_java_both_ways() -> None:
    # wechatpay-java core/src/test/java/com/wechat/pay/java/core/cipher/AeadAesCipherTest.java, TestConfig.API_V3_KEY
    ciphertext = "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI="
    assert (
        decrypt_resource(JAVA_API_V3_KEY, nonce="uluk4a9R25RW", associated_data="associatedData", ciphertext=ciphertext)
        == b"message"
    )
    sealed = encrypt_resource(
        JAVA_API_V3_KEY, nonce="uluk4a9R25RW", associated_data="associatedData", plaintext=b"message"
    )
    assert sealed == ciphertext


# wechatpay-java core/src/test/java/com/wechat/pay/java/core/model/TestConfig.java DOWNLOAD_CERTIFICATE_RESPONSE
JAVA_DOWNLOAD_CERTIFICATE_RESPONSE = {
    "data": [
        {
            "effective_time": "2023-09-19T23:15:58+08:00",
            "encrypt_certificate": {
                "algorithm": "AEAD_AES_256_GCM",
                "associated_data": "certificate",
                "ciphertext": (
                    "Mr/AxbvY+WL9hKlD5nIa03LOMPpn5f+CWeNxE4ujl0f5gXZ9XLJ9CldkArCOTsbU62XgKnTc3YvRMZQ7wCmE2fzwmAenAySTYsP"
                    "ms72JhggPWfdqVxri9YD5wBYKn8Ck0Fc5JIiVw9WlN2oxHBz83mRVsjoTGC5+cX1CdYqKuZ8pkvi0aCJIq07ZC8MHoTowUz+4jYJ"
                    "y9XeKqip83Z7BmUYxsePpNM+HtihBqTJIUYXJfX7Col5X0ACsApRoU9l6swfW/kzvqNpDJavhDBGasLrr5822+Fk5nVkcTi53f8"
                    "Wbue7ODWjJxj1yhRYcxFCvXLtpYNB+Qa1aXtrBSdBdBI2p7o+6Imn+auHLBCzkrZqF/yd+d4vTn4tqHPLUj89XcHsMf96uBo3T/H"
                    "QV8LEDeIO+6YvOK9FrIDYsvp+imN4n/mnF7eJKo9mpN/QqWJiawrFpAmMMxFKBjIdpgMnVUl3Z11RcWKyfOJ3kcmItTWcnZFNyDg"
                    "R9cS0aU6QPlefa3uUW89uzBuHjcFdDl43yU3LE4qZnHLDcDgx4qt0OFCLiy51GXtEpyYs5k99YJBvKK+RyIs4Yc1/smBmClQUhxW"
                    "+8bsPNOcXfDvH2yX4YzESoO4TV0RqiCgnsSd4zIFyJPiMKIGzVHiw6Kg0eGCmB4mGHEEZCQ0eN3SSPO0QVjjtBYfgXDZfVHSaAB8"
                    "PjWBVNFimoViZZQrwT6Ygo0LU0Dd8+F5aHFYr4OPHPslr3hrgutEYXDTv1vTA6ABJGqknJ9Y2vtyWpy7aIwxc0kQq/1ezjs+RMVL"
                    "/LRpGDnbx1/CGPDjZhYgZypKa55+PDhoaQxqkF3xCLz2DGoNHZYmFqxzAOsAK0vJZw4VcAk6ssbA6YIaMuiemEpxfLC9ZiXtRqsX"
                    "9s+GWjjtA8JywOFMO+NKZm9BH/E5YNg2DDD3sHG9Mciwn7yJ6sdf8h2lAWlEExAOeiBNyshOHAQ0/S+x1ncWNiqY+Uh5n0rtonve"
                    "PV2MsxVlEWR3AVHn1abcEWkzivd+G5kg7LYO0goqzGClcQfnFfZdO6KwcMXsBCnm9A1Bl4+k5LLokTIYH5/36SRIZ9j0CHGD77BQ"
                    "LE7x8AlNsoFS2m263tLLq78TFqvZUTIZIQcVIl+NInscS3xQbA38qqFqutCWIwoF1azuJ7woiJyMvnS3xzIpNzP+rzJ8VDXxjLjp"
                    "EUBOC9WDs74+QMtsAdmh6g0KDclHEk8WJ4P2bnso4z3VCGoDT5X/0bS1C+jMZMKaOCNB21FZ08qgUHmKeDeg8ylENu+mh2Y/AaED"
                    "SGkGBHIfFbhMYO3uRxhk9hldiHEnHgdkXiVAAUWk/IhtmGijibO/L76vB74Xpes973uK+2iFKgNBk8qTLLZZnuWbcMQuA6VsFULR"
                    "b/C+q9B21YuAWPMzvgBwr4EX2m/OpF5w8Q0HL7v1H5H0mIGJbrjnklUPoBYrw30W3uk7yF0KE6sfMukafFx0S9rBOL0RykGDPwC0"
                    "lHSNySkXDeM5XvDJ+dtHK+RDwhJR+azfrWAHGMtZcQ+YVamjWVmHxXM03j3GeCXgqae1upwHzkPL5OwojcQ5MQi3Kv/1xtwY0cRN"
                    "/yeZTOsXfujtqhkJj/Vltby4lnW4SCj4LjWQF19BY6zhzF4yybBA8bhhtoNP/zx8QkhHAkIROkK2ZVgfocCAPvfQ+vSrsIBO+L5c"
                    "mg6mzFn4g84lsHscgXnszIlzUrzx/4Tam0uwuS9J1gddZ0I0QUt9SJzfsoBCTU0OgNMUtXKS5HvgXe7abexMtFH5eulOsAuFZkQ5"
                    "LYJa/m4yHFInXzL/t3hjdTi2NmxUufvYzwIyffRTu5vS9vjscARD9lUQDHFQ/xgWe1i8EkRlrSfjlXt00+4//h2bcJKyTBT3IXwv"
                    "KNsuY29V9/vU3HkvWKZ99zpSlmcZRuBa1BHbyPEvc0NlqIIoKidxqUvOR64MzudHhAjgWFP+IXojfhS3Gj9OJhBL7s"
                ),
                "nonce": "14b16c03dc1b",
            },
            "expire_time": "2028-09-17T23:15:58+08:00",
            "serial_no": "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC",
        }
    ]
}


def test_certificate_download_vector_of_wechatpay_java() -> None:
    # wechatpay-java TestConfig.DOWNLOAD_CERTIFICATE_RESPONSE / DOWNLOAD_CERTIFICATE_SERIAL_NUMBER, API_V3_KEY
    body = json.dumps(JAVA_DOWNLOAD_CERTIFICATE_RESPONSE).encode()
    (certificate,) = parse_certificates(body, JAVA_API_V3_KEY)
    assert certificate.serial_no == "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC"
    assert certificate.effective_time == datetime(2023, 9, 19, 15, 15, 58, tzinfo=UTC)
    assert certificate.expire_time == datetime(2028, 9, 17, 15, 15, 58, tzinfo=UTC)
    parsed = x509.load_pem_x509_certificate(certificate.certificate_pem)
    assert parsed.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "Tenpay.com sign"
    assert (
        load_public_key(certificate.certificate_pem).public_numbers()
        == load_public_key(certificate.public_key_pem).public_numbers()
    )


def test_certificate_download_with_a_wrong_api_v3_key_is_a_bad_response() -> None:
    body = json.dumps(JAVA_DOWNLOAD_CERTIFICATE_RESPONSE).encode()
    with pytest.raises(WechatPayBadResponseError) as caught:
        parse_certificates(body, b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gc")
    assert caught.value.reason == "decrypt_failed"


def test_certificate_serial_mismatch_is_a_bad_response() -> None:
    forged = json.loads(json.dumps(JAVA_DOWNLOAD_CERTIFICATE_RESPONSE))
    forged["data"][0]["serial_no"] = JAVA_WECHAT_PAY_SERIAL
    with pytest.raises(WechatPayBadResponseError):
        parse_certificates(json.dumps(forged).encode(), JAVA_API_V3_KEY)


@given(
    plaintext=st.binary(max_size=300),
    nonce=st.text(alphabet="0123456789abcdefABCDEF", min_size=12, max_size=12),
    aad=st.sampled_from(["transaction", "refund", "certificate", ""]),
)
def test_decrypt_agrees_with_the_wechatpayv3_oracle(plaintext: bytes, nonce: str, aad: str) -> None:
    key = "0123456789abcdefghijklmnopqrstuv"
    text = plaintext.decode("utf-8", "replace").encode("utf-8")
    sealed = encrypt_resource(key.encode(), nonce=nonce, associated_data=aad, plaintext=text)
    ours = decrypt_resource(key.encode(), nonce=nonce, associated_data=aad, ciphertext=sealed)
    assert ours == text
    assert oracle.aes_decrypt(nonce=nonce, ciphertext=sealed, associated_data=aad, apiv3_key=key) == text.decode()


def test_a_tampered_ciphertext_fails_here_and_in_the_oracle() -> None:
    key = "0123456789abcdefghijklmnopqrstuv"
    sealed = bytearray(
        base64.b64decode(encrypt_resource(key.encode(), nonce="a" * 12, associated_data="x", plaintext=b"{}"))
    )
    sealed[0] ^= 1
    tampered = base64.b64encode(bytes(sealed)).decode()
    assert oracle.aes_decrypt(nonce="a" * 12, ciphertext=tampered, associated_data="x", apiv3_key=key) is None
    with pytest.raises(WechatPayDecryptError):
        decrypt_resource(key.encode(), nonce="a" * 12, associated_data="x", ciphertext=tampered)


# --- signatures --------------------------------------------------------------------------------------------------


def test_signature_vector_of_wechatpay_java() -> None:
    # wechatpay-java cipher/RSAVerifierTest.java: SIGNATURE_RESULT = the merchant key's RSASigner over "message"
    expected = (
        "Rq+5ZpWV6IHTWE1+9gCrYJKguNgbItpMdlIA+PVCPCdUAKNlohZz7CL7Y8xWDIFJjdGnErMj6Z+Q/h9CF5MV+nAVkqDmBR0uP5pp"
        "sUEzco4ijvKHsvI2ro4boSW6vSfQs3W8I4QSI9a0/NFIgvj83Fv27LIYZf7deaFWmEwd1fpAeJRCyoKyBeJPdsjVx0//Lqe6"
        "Wze2zVdliLcBvaHCfpd8+rAVGS+FQDeWgHqJ7n/Zy09LmV1/ghs7pO1mdjdD16SHKlysAD3K5hNGUJX/SHrEXEcu1yO1AOb/"
        "YvOVkjNh8243rcfXNE5L4ph2XS11vS+2aToKYSOcKUagf0LLaw=="
    )
    assert sign_message(JAVA_MERCHANT_PRIVATE_KEY, b"message") == expected
    # and it verifies under the merchant certificate (RSAVerifierTest.testCertificateVerify), not under the
    # WeChat Pay public key (testPublicKeyVerify is false)
    merchant_key = load_public_key(JAVA_MERCHANT_CERTIFICATE)
    merchant_key.verify(base64.b64decode(expected), b"message", padding.PKCS1v15(), hashes.SHA256())
    assert load_public_key(JAVA_WECHAT_PAY_PUBLIC_KEY).public_numbers() != merchant_key.public_numbers()


def test_merchant_certificate_serial_of_wechatpay_java() -> None:
    # wechatpay-java TestConfig.MERCHANT_CERTIFICATE_SERIAL_NUMBER for merchant_certificate.pem
    certificate = x509.load_pem_x509_certificate(JAVA_MERCHANT_CERTIFICATE)
    assert format(certificate.serial_number, "X") == JAVA_MERCHANT_SERIAL


def test_signature_vector_of_wechatpay_go() -> None:
    # wechatpay-go core/auth/signers/sha256withrsa_signer_test.go: testMessage "source" -> testExpectedSignature
    expected = (
        "BKyAfU4iMCuvXMXS0Wzam3V/cnxZ+JaqigPM5OhljS2iOT95OO6Fsuml2JkFANJU9K6q9bLlDhPXuoVz+pp4hAm6"
        "pHU4ld815U4jsKu1RkyaII+1CYBUYC8TK0XtJ8FwUXXz8vZHh58rrAVN1XwNyvD1vfpxrMT4SL536GLwvpUHlCqIMzoZUguLli/K8V29QiOh"
        "uH6IEqLNJn8e9b3nwNcQ7be3CzYGpDAKBfDGPCqCv8Rw5zndhlffk2FEA70G4hvMwe51qMN/RAJbknXG23bSlObuTCN7Ndj1aJGH6/L+hdwf"
        "LpUtJm4QYVazzW7DFD27EpSQEqA8bX9+8m1rLg=="
    )
    assert sign_message(GO_SIGNER_PRIVATE_KEY, b"source") == expected


def test_response_signature_round_trip_with_the_java_wechat_pay_key_pair() -> None:
    # wechatpay-java resources: wechat_pay_private_key.pem signs, wechat_pay_public_key.pem verifies
    body = b'{"prepay_id":"wx201410272009395522657a690389285100"}'
    signature = sign_message(
        JAVA_WECHAT_PAY_PRIVATE_KEY, response_message("1554208460", "593BEC0C930BF1AFEB40B4A08C8FB242", body)
    )
    assert verify_signature(
        JAVA_WECHAT_PAY_PUBLIC_KEY,
        timestamp="1554208460",
        nonce="593BEC0C930BF1AFEB40B4A08C8FB242",
        body=body,
        signature=signature,
    )
    assert oracle.rsa_verify(
        "1554208460",
        "593BEC0C930BF1AFEB40B4A08C8FB242",
        body.decode(),
        signature,
        oracle.load_public_key(JAVA_WECHAT_PAY_PUBLIC_KEY.decode()),
    )
    assert not verify_signature(
        JAVA_MERCHANT_CERTIFICATE,
        timestamp="1554208460",
        nonce="593BEC0C930BF1AFEB40B4A08C8FB242",
        body=body,
        signature=signature,
    )
    assert not verify_signature(
        JAVA_WECHAT_PAY_PUBLIC_KEY,
        timestamp="1554208460",
        nonce="593BEC0C930BF1AFEB40B4A08C8FB242",
        body=body + b" ",
        signature=signature,
    )


@pytest.mark.parametrize(
    "signature",
    ["", "WECHATPAY/SIGNTEST/", "not base64!", "AAAA", "WECHATPAY/SIGNTEST/" + "A" * 344],
)
def test_verify_signature_is_false_on_any_failure(signature: str) -> None:
    assert not verify_signature(JAVA_WECHAT_PAY_PUBLIC_KEY, timestamp="1", nonce="n", body=b"", signature=signature)


def test_a_signtest_probe_is_false_even_when_the_rest_would_verify() -> None:
    body = b"{}"
    real = sign_message(JAVA_WECHAT_PAY_PRIVATE_KEY, response_message("1", "n", body))
    assert verify_signature(JAVA_WECHAT_PAY_PUBLIC_KEY, timestamp="1", nonce="n", body=body, signature=real)
    assert not verify_signature(
        JAVA_WECHAT_PAY_PUBLIC_KEY, timestamp="1", nonce="n", body=body, signature="WECHATPAY/SIGNTEST/" + real
    )


def test_an_unusable_key_does_not_verify() -> None:
    assert not verify_signature(
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        timestamp="1",
        nonce="n",
        body=b"",
        signature="AAAA",
    )


def test_request_and_response_messages_are_line_terminated() -> None:
    # protocols §2.1 / §2.2: every line, the last included, ends with \n; GET has an empty body line
    assert request_message("get", "/v3/certificates", "1554208460", "593BEC0C", b"") == (
        b"GET\n/v3/certificates\n1554208460\n593BEC0C\n\n"
    )
    assert request_message("POST", "/v3/pay/transactions/jsapi", 1, "n", '{"a":"挂号"}') == (
        'POST\n/v3/pay/transactions/jsapi\n1\nn\n{"a":"挂号"}\n'.encode()
    )
    assert response_message("1", "n", b"") == b"1\nn\n\n"


def test_authorization_header_equals_the_wechatpayv3_oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oracle.time, "time", lambda: 1554208460.4)
    body = '{"mchid":"1900009191","amount":{"total":100}}'
    theirs = oracle.build_authorization(
        "/v3/pay/transactions/jsapi",
        "POST",
        "1900009191",
        JAVA_MERCHANT_SERIAL,
        oracle.load_private_key(JAVA_MERCHANT_PRIVATE_KEY.decode()),
        data=body,
        nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242",
    )
    ours = authorization_header(
        mchid="1900009191",
        serial_no=JAVA_MERCHANT_SERIAL,
        private_key_pem=JAVA_MERCHANT_PRIVATE_KEY,
        method="POST",
        url_path_with_query="/v3/pay/transactions/jsapi",
        timestamp="1554208460",
        nonce="593BEC0C930BF1AFEB40B4A08C8FB242",
        body=body.encode(),
    )
    assert ours == theirs
    assert ours.startswith(f'{AUTH_SCHEMA} mchid="1900009191",nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242",signature="')


def _oracle_client(private_key_pem: bytes, api_v3_key: str = "0123456789abcdefghijklmnopqrstuv") -> WeChatPay:
    """wechatpayv3 in public-key mode: nothing is downloaded at construction."""
    return WeChatPay(
        wechatpay_type=WeChatPayType.MINIPROG,
        mchid=JAVA_MERCHANT_ID,
        private_key=private_key_pem.decode(),
        cert_serial_no=JAVA_MERCHANT_SERIAL,
        appid="wx8888888888888888",
        apiv3_key=api_v3_key,
        public_key=JAVA_WECHAT_PAY_PUBLIC_KEY.decode(),
        public_key_id=PUB_KEY_ID,
    )


def test_pay_sign_signs_the_documented_four_lines() -> None:
    # protocols §2.3: the documented example message (the key is not published: the wechatpay-java merchant key)
    expected_message = (
        b"wx8888888888888888\n1414561699\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\n"
        b"prepay_id=wx201410272009395522657a690389285100\n"
    )
    signature = pay_sign(
        JAVA_MERCHANT_PRIVATE_KEY,
        app_id="wx8888888888888888",
        timestamp="1414561699",
        nonce="5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        package="prepay_id=wx201410272009395522657a690389285100",
    )
    assert signature == sign_message(JAVA_MERCHANT_PRIVATE_KEY, expected_message)


@given(
    app_id=st.from_regex(r"wx[0-9a-f]{16}", fullmatch=True),
    timestamp=st.integers(min_value=1_000_000_000, max_value=9_999_999_999).map(str),
    nonce=st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=32),
    prepay_id=st.from_regex(r"wx[0-9a-z]{34}", fullmatch=True),
)
def test_pay_sign_and_app_pay_sign_equal_the_wechatpayv3_oracle(
    app_id: str, timestamp: str, nonce: str, prepay_id: str
) -> None:
    sdk = _oracle_client(JAVA_MERCHANT_PRIVATE_KEY)
    package = f"prepay_id={prepay_id}"
    assert pay_sign(JAVA_MERCHANT_PRIVATE_KEY, app_id=app_id, timestamp=timestamp, nonce=nonce, package=package) == (
        sdk.sign([app_id, timestamp, nonce, package])
    )
    assert app_pay_sign(
        JAVA_MERCHANT_PRIVATE_KEY, app_id=app_id, timestamp=timestamp, nonce=nonce, prepay_id=prepay_id
    ) == (sdk.sign([app_id, timestamp, nonce, prepay_id]))


# --- notifications -------------------------------------------------------------------------------------------------

API_V3_KEY = b"0123456789abcdefghijklmnopqrstuv"
TRANSACTION = {
    "appid": "wx8888888888888888",
    "mchid": JAVA_MERCHANT_ID,
    "out_trade_no": "REG20250301000001",
    "transaction_id": "4200000000202503010000000001",
    "trade_type": "JSAPI",
    "trade_state": "SUCCESS",
    "trade_state_desc": "支付成功",
    "bank_type": "OTHERS",
    "attach": "",
    "success_time": "2025-03-01T16:00:00+08:00",
    "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    "amount": {"total": 2500, "payer_total": 2500, "currency": "CNY", "payer_currency": "CNY"},
}


def notification(
    *,
    resource: dict[str, Any] | None = None,
    now: datetime = NOW,
    key: bytes = JAVA_WECHAT_PAY_PRIVATE_KEY,
    serial: str = PUB_KEY_ID,
    api_v3_key: bytes = API_V3_KEY,
    event_type: str = "TRANSACTION.SUCCESS",
) -> tuple[dict[str, str], bytes]:
    """A notification as WeChat Pay sends it: the envelope, the encrypted resource, the Wechatpay-* headers."""
    plain = json.dumps(resource if resource is not None else TRANSACTION, ensure_ascii=False).encode()
    original_type = "transaction" if event_type.startswith("TRANSACTION") else "refund"
    body = json.dumps(
        {
            "id": "EV-2018022511223320873",
            "create_time": "2025-03-01T16:00:01+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": encrypt_resource(
                    api_v3_key, nonce="fdasflkja484", associated_data=original_type, plaintext=plain
                ),
                "associated_data": original_type,
                "nonce": "fdasflkja484",
            },
        },
        ensure_ascii=False,
    ).encode()
    timestamp = str(int(now.timestamp()))
    nonce = "593BEC0C930BF1AFEB40B4A08C8FB242"
    headers = {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": sign_message(key, response_message(timestamp, nonce, body)),
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    return headers, body


KEYS = {PUB_KEY_ID: JAVA_WECHAT_PAY_PUBLIC_KEY}


def test_a_notification_is_verified_and_decrypted_as_the_wechatpayv3_oracle_does() -> None:
    headers, body = notification()
    event = verify_notification(headers, body, keys=KEYS, now=NOW, api_v3_key=API_V3_KEY)
    assert event["event_type"] == "TRANSACTION.SUCCESS"
    assert event["resource"] == TRANSACTION
    assert event == _oracle_client(JAVA_MERCHANT_PRIVATE_KEY, API_V3_KEY.decode()).callback(headers, body)

    transaction = parse_transaction(event["resource"])
    assert transaction.total_fen == 2500
    assert transaction.paid
    assert transaction.success_time == datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" not in repr(transaction), "openids stay out of repr"


def test_headers_are_matched_case_insensitively_and_serials_as_numbers() -> None:
    certificate_serial = "0" + JAVA_WECHAT_PAY_SERIAL.lower()
    headers, body = notification(serial=certificate_serial)
    lowered = {name.lower(): value for name, value in headers.items()}
    keys = {JAVA_WECHAT_PAY_SERIAL: JAVA_WECHAT_PAY_PUBLIC_KEY}
    assert verify_notification(lowered, body, keys=keys, now=NOW, api_v3_key=API_V3_KEY)["resource"] == TRANSACTION


def test_a_signtest_probe_is_refused_before_anything_else() -> None:
    headers, body = notification()
    headers["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/" + headers["Wechatpay-Signature"]
    with pytest.raises(WechatPaySignatureProbeError) as caught:
        verify_notification(headers, body, keys={}, now=NOW + timedelta(days=1), api_v3_key=API_V3_KEY)
    assert caught.value.code == "wechatpay.signature_probe"
    assert isinstance(caught.value, AuthenticationError)


@pytest.mark.parametrize("skew", [301, -301, 86400])
def test_a_stale_notification_is_refused(skew: int) -> None:
    headers, body = notification(now=NOW + timedelta(seconds=skew))
    with pytest.raises(WechatPayStaleError) as caught:
        verify_notification(headers, body, keys=KEYS, now=NOW, api_v3_key=API_V3_KEY)
    assert caught.value.code == "wechatpay.stale"


@pytest.mark.parametrize("skew", [300, -300, 0])
def test_the_window_is_300_seconds_inclusive(skew: int) -> None:
    headers, body = notification(now=NOW + timedelta(seconds=skew))
    assert (
        verify_notification(headers, body, keys=KEYS, now=NOW, api_v3_key=API_V3_KEY)["id"] == "EV-2018022511223320873"
    )


def test_an_unknown_serial_is_refused() -> None:
    headers, body = notification(serial="PUB_KEY_ID_0000000000000000000000000000000000")
    with pytest.raises(WechatPayUnknownSerialError) as caught:
        verify_notification(headers, body, keys=KEYS, now=NOW, api_v3_key=API_V3_KEY)
    assert caught.value.code == "wechatpay.unknown_serial"


def test_a_tampered_body_is_refused() -> None:
    headers, body = notification()
    tampered = body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.SUCCESS ")
    with pytest.raises(WechatPayBadSignatureError) as caught:
        verify_notification(headers, tampered, keys=KEYS, now=NOW, api_v3_key=API_V3_KEY)
    assert caught.value.code == "wechatpay.bad_signature"


def test_a_notification_signed_by_another_key_is_refused() -> None:
    headers, body = notification(key=generated_private_pem("forger"))
    with pytest.raises(WechatPayBadSignatureError):
        verify_notification(headers, body, keys=KEYS, now=NOW, api_v3_key=API_V3_KEY)


@pytest.mark.parametrize(
    "missing", ["Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"]
)
def test_missing_signature_headers_are_refused(missing: str) -> None:
    headers, body = notification()
    del headers[missing]
    with pytest.raises(WechatPayBadSignatureError):
        verify_notification(headers, body, keys=KEYS, now=NOW, api_v3_key=API_V3_KEY)


def test_a_wrong_api_v3_key_fails_decryption_after_verification() -> None:
    headers, body = notification(api_v3_key=b"another0api0v3key000000000000000")
    with pytest.raises(WechatPayDecryptError):
        verify_notification(headers, body, keys=KEYS, now=NOW, api_v3_key=API_V3_KEY)


def test_a_signed_but_malformed_envelope_is_a_bad_notification() -> None:
    body = b'{"id":"EV-1","resource_type":"plain","resource":{}}'
    timestamp = str(int(NOW.timestamp()))
    headers = {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": "n",
        "Wechatpay-Signature": sign_message(JAVA_WECHAT_PAY_PRIVATE_KEY, response_message(timestamp, "n", body)),
        "Wechatpay-Serial": PUB_KEY_ID,
    }
    with pytest.raises(WechatPayBadNotificationError):
        verify_notification(headers, body, keys=KEYS, now=NOW, api_v3_key=API_V3_KEY)


def test_a_refund_notification_parses_into_a_refund() -> None:
    resource = {
        "mchid": JAVA_MERCHANT_ID,
        "out_trade_no": "REG20250301000001",
        "transaction_id": "4200000000202503010000000001",
        "out_refund_no": "RF20250301000001",
        "refund_id": "50000000382019052709732678859",
        "refund_status": "SUCCESS",
        "success_time": "2025-03-01T16:05:00+08:00",
        "user_received_account": "招商银行信用卡0403",
        "amount": {"total": 2500, "refund": 1000, "payer_total": 2500, "payer_refund": 1000},
    }
    headers, body = notification(resource=resource, event_type="REFUND.SUCCESS")
    event = verify_notification(headers, body, keys=KEYS, now=NOW, api_v3_key=API_V3_KEY)
    refund = parse_refund(event["resource"])
    assert (refund.status, refund.refund_fen, refund.total_fen) == ("SUCCESS", 1000, 2500)
    assert "0403" not in repr(refund)


def test_verify_signed_headers_returns_the_serial() -> None:
    headers, body = notification()
    assert verify_signed_headers(headers, body, keys=KEYS, now=NOW) == PUB_KEY_ID


# --- odds and ends ---------------------------------------------------------------------------------------------------


def test_times_are_rfc3339_beijing() -> None:
    assert format_time(datetime(2024, 6, 8, 2, 34, 56, tzinfo=UTC)) == "2024-06-08T10:34:56+08:00"
    assert parse_time("2024-06-08T10:34:56+08:00") == datetime(2024, 6, 8, 2, 34, 56, tzinfo=UTC)
    assert parse_time("") is None
    with pytest.raises(WechatPayBadResponseError):
        parse_time("2024-06-08 10:34:56")


def test_a_malformed_transaction_is_a_bad_response() -> None:
    with pytest.raises(WechatPayBadResponseError):
        parse_transaction({**TRANSACTION, "amount": {"total": "25.00"}})
    with pytest.raises(WechatPayBadResponseError):
        parse_transaction({key: value for key, value in TRANSACTION.items() if key != "out_trade_no"})


def test_error_categories_and_codes() -> None:
    unavailable = WechatPayUnavailableError("x", failure=Failure.SERVER, vendor_code="SYSTEM_ERROR", http_status=500)
    assert isinstance(unavailable, UpstreamError)
    assert unavailable.code == "wechatpay.unavailable"
    assert unavailable.retryable
    assert is_transient(unavailable)
    assert unavailable.extra["vendor_code"] == "SYSTEM_ERROR"
    bad = WechatPayBadResponseError("x", reason="hash_mismatch")
    assert bad.code == "wechatpay.bad_response"
    assert not is_transient(bad)
    rejected = WechatPayRejectedError("x", vendor_code="ORDERPAID", http_status=400, vendor_message="该订单已支付")
    assert isinstance(rejected, ConflictError)
    assert (rejected.code, rejected.vendor_code, rejected.message) == (
        "wechatpay.rejected",
        "ORDERPAID",
        "订单已支付，请勿重复支付",
    )
    param = WechatPayParamError("x", vendor_code="PARAM_ERROR", http_status=400)
    assert isinstance(param, ValidationError)
    assert param.code == "wechatpay.rejected"


def test_a_key_store_needs_a_key_or_downloads() -> None:
    with pytest.raises(ValueError, match="needs a public key"):
        PlatformKeyStore()
    with pytest.raises(ValueError, match="PUB_KEY_ID_"):
        PlatformKeyStore.public_key("KEY_1", JAVA_WECHAT_PAY_PUBLIC_KEY)
    store = PlatformKeyStore.public_key(PUB_KEY_ID, JAVA_WECHAT_PAY_PUBLIC_KEY)
    assert store.keys(NOW) == {PUB_KEY_ID: JAVA_WECHAT_PAY_PUBLIC_KEY}
    assert PlatformKeyStore.certificates().keys(NOW) == {}
