"""Settings fail at start with a clear message; production refuses demo-only settings (DESIGN D11)."""

from __future__ import annotations

import pytest

from bootstrap.settings import Secret, SettingsError, load_settings

PROD_OK = {
    "HSP_ENV": "prod",
    "HSP_DB__URL": "postgresql+asyncpg://app:pw@db/hsp",
    "HSP_REDIS__URL": "redis://cache:6379/0",
    "HSP_CRYPTO__KEYS": '{"k1": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="}',
    "HSP_CRYPTO__ACTIVE_KID": "k1",
    "HSP_CRYPTO__INDEX_KEY": "aW5kZXhpbmRleGluZGV4aW5kZXhpbmRleGluZGV4MTI=",
    "HSP_AUTH__SIGNING_KEYS": '{"t1": "-----BEGIN PRIVATE KEY-----"}',
    "HSP_AUTH__ACTIVE_KID": "t1",
}


def test_values_are_converted_and_nested() -> None:
    settings = load_settings({**PROD_OK, "HSP_DB__POOL_SIZE": "25", "HSP_HTTP__TRUSTED_PROXIES": '["10.0.0.0/8"]'})
    assert settings.db.pool_size == 25
    assert settings.http.trusted_proxies == ["10.0.0.0/8"]
    assert settings.db_owner_url == settings.db.url


def test_appointment_reminders_are_configurable() -> None:
    default = load_settings(PROD_OK).booking
    assert (default.reminder_evening_time, default.reminder_before_minutes) == ("20:00", 120)
    changed = load_settings(
        {**PROD_OK, "HSP_BOOKING__REMINDER_EVENING_TIME": "19:30", "HSP_BOOKING__REMINDER_BEFORE_MINUTES": "90"}
    ).booking
    assert (changed.reminder_evening_time, changed.reminder_before_minutes) == ("19:30", 90)


def test_non_hsp_variables_are_ignored() -> None:
    assert load_settings({**PROD_OK, "PATH": "/bin", "HOME": "/root"}).env == "prod"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("HSP_DB__POOL_SIZE", "lots", "HSP_DB__POOL_SIZE"),
        ("HSP_DB__NOPE", "1", "unknown setting HSP_DB__NOPE"),
        ("HSP_NOPE__X", "1", "unknown setting HSP_NOPE__X"),
        ("HSP_WHATEVER", "1", "unknown setting HSP_WHATEVER"),
        ("HSP_ENV", "production", "HSP_ENV"),
        ("HSP_CLOCK__MODE", "fast", "HSP_CLOCK__MODE"),
        ("HSP_HTTP__TRUSTED_PROXIES", "[not json", "bad JSON"),
        ("HSP_BOOKING__REMINDER_EVENING_TIME", "8pm", "HSP_BOOKING__REMINDER_EVENING_TIME"),
        ("HSP_BOOKING__REMINDER_EVENING_TIME", "24:00", "HSP_BOOKING__REMINDER_EVENING_TIME"),
        ("HSP_BOOKING__REMINDER_BEFORE_MINUTES", "0", "HSP_BOOKING__REMINDER_BEFORE_MINUTES"),
        ("HSP_BOOKING__REMINDER_BEFORE_MINUTES", "soon", "HSP_BOOKING__REMINDER_BEFORE_MINUTES"),
    ],
)
def test_bad_settings_fail_at_start_naming_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**PROD_OK, name: value})
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HSP_SANDBOX__MOUNT", "true"),
        ("HSP_CLOCK__MODE", "offset"),
        ("HSP_CRYPTO__DEMO_KEYS", "true"),
    ],
)
def test_prod_refuses_demo_settings(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**PROD_OK, name: value})
    assert "refused in HSP_ENV=prod" in str(caught.value)
    assert name in str(caught.value)


def test_prod_requires_a_database_redis_and_keys() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"HSP_ENV": "prod"})
    message = str(caught.value)
    assert "HSP_DB__URL" in message
    assert "HSP_REDIS__URL" in message
    assert "HSP_CRYPTO__KEYS" in message
    assert "HSP_AUTH__SIGNING_KEYS" in message


def test_the_demo_accepts_what_prod_refuses() -> None:
    settings = load_settings({"HSP_ENV": "demo", "HSP_SANDBOX__MOUNT": "true", "HSP_CLOCK__MODE": "offset"})
    assert settings.sandbox.mount
    assert settings.db.url is None


def test_active_kid_must_name_a_key() -> None:
    with pytest.raises(SettingsError, match="ACTIVE_KID"):
        load_settings({**PROD_OK, "HSP_CRYPTO__ACTIVE_KID": "k9"})


def test_secrets_never_show_in_repr() -> None:
    settings = load_settings(PROD_OK)
    text = repr(settings)
    assert "pw@db" not in text
    assert "c2VjcmV0" not in text
    assert isinstance(settings.db.url, Secret)
    assert settings.db.url.reveal() == "postgresql+asyncpg://app:pw@db/hsp"


def test_dotenv_is_read_and_the_environment_wins(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / ".env"  # type: ignore[operator]
    path.write_text("HSP_DB__POOL_SIZE=7\nHSP_DB__MAX_OVERFLOW=3\n")
    settings = load_settings({**PROD_OK, "HSP_DB__MAX_OVERFLOW": "9"}, dotenv=path)
    assert settings.db.pool_size == 7
    assert settings.db.max_overflow == 9


@pytest.mark.parametrize("key", ["short", "x" * 33, "键" * 11])
def test_a_wechat_pay_apiv3_key_is_exactly_32_bytes(key: str) -> None:
    """WeChat Pay's APIv3 key (AEAD_AES_256_GCM) is 32 bytes; a wrong one stops the start, naming the variable."""
    with pytest.raises(SettingsError, match="HSP_WECHATPAY__API_V3_KEY"):
        load_settings({"HSP_ENV": "test", "HSP_WECHATPAY__API_V3_KEY": key})


def test_a_wechat_pay_merchant_needs_its_key_serial_and_apiv3_key() -> None:
    with pytest.raises(SettingsError, match="HSP_WECHATPAY__MCHID"):
        load_settings({"HSP_ENV": "test", "HSP_WECHATPAY__MCHID": "1900000109"})
    settings = load_settings(
        {
            "HSP_ENV": "test",
            "HSP_WECHATPAY__MCHID": "1900000109",
            "HSP_WECHATPAY__MERCHANT_PRIVATE_KEY": "pem",
            "HSP_WECHATPAY__MERCHANT_SERIAL_NO": "ABC",
            "HSP_WECHATPAY__API_V3_KEY": "k" * 32,
        }
    )
    assert settings.wechatpay.api_v3_key is not None
    assert "k" * 32 not in repr(settings.wechatpay)
