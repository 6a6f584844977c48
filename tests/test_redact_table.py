"""Every redaction rule, one row each: the exact text that is stored, so a rule that is
dropped, narrowed or made case-sensitive fails a row."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exectrack._redact import (
    REDACTED,
    clean_text,
    encode_metadata,
    normalize_metadata,
    redact_text,
)

# (input, exactly what is stored): secrets in free text
TEXT_RULES = [
    # name=value pairs: every name, any case, = or :, quoted or not
    ("api_key=abc123def", "api_key=[REDACTED]"),
    ("API_KEY=abc123def", "API_KEY=[REDACTED]"),
    ("Api-Key: abc123def", "Api-Key: [REDACTED]"),
    ("apikey=abc123def", "apikey=[REDACTED]"),
    ("api_key = 'abc123def'", "api_key = '[REDACTED]'"),
    ("password=hunter22", "password=[REDACTED]"),
    ("Password=hunter22", "Password=[REDACTED]"),
    ("PASSWORD: hunter22", "PASSWORD: [REDACTED]"),
    ("passwd=hunter22", "passwd=[REDACTED]"),
    ("PWD=hunter22", "PWD=[REDACTED]"),
    ("secret=xyz123", "secret=[REDACTED]"),
    ("client_secret=xyz123", "client_secret=[REDACTED]"),
    ("Client-Secret: xyz123", "Client-Secret: [REDACTED]"),
    ("access_token=tok123456", "access_token=[REDACTED]"),
    ("Access-Token: tok123456", "Access-Token: [REDACTED]"),
    ("refresh_token=tok123456", "refresh_token=[REDACTED]"),
    ("refreshtoken=tok123456", "refreshtoken=[REDACTED]"),
    ("auth_token=tok123456", "auth_token=[REDACTED]"),
    ("AUTH-TOKEN=tok123456", "AUTH-TOKEN=[REDACTED]"),
    # the value ends at a quote, &, comma, semicolon or space
    ('{"password": "hunter22", "user": "bob"}', '{"password": "[REDACTED]", "user": "bob"}'),
    ("password=hunter22&user=bob", "password=[REDACTED]&user=bob"),
    ("password=hunter22;user=bob", "password=[REDACTED];user=bob"),
    ("password=hunter22,user=bob", "password=[REDACTED],user=bob"),
    # authorization schemes, any case
    ("Authorization: Bearer abcdefgh12345678", "Authorization: Bearer [REDACTED]"),
    ("BEARER abcdefgh12345678", "BEARER [REDACTED]"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [REDACTED]"),
    ("Authorization: Token abcdef0123456789", "Authorization: Token [REDACTED]"),
    # a scheme on its own, outside a secret pair
    ("proxy sent basic dXNlcjpwYXNzd29yZA== ok", "proxy sent basic [REDACTED] ok"),
    ("token abcdefgh", "token [REDACTED]"),
    # passwords in URLs keep the user and host, the password becomes ***
    ("https://user:hunter22@example.com/path", "https://user:***@example.com/path"),
    ("redis://:pw123456@cache:6379/0", "redis://:***@cache:6379/0"),
    ("postgresql://app:s3cr3t@db:5432/x and more", "postgresql://app:***@db:5432/x and more"),
    # provider keys, in the middle of a sentence
    ("key sk-abcdefghijklmnop1234 failed", "key [REDACTED] failed"),
    ("key sk-proj-abcdefghijklmnop1234 failed", "key [REDACTED] failed"),
    ("gh ghp_abcdefghijklmnopqrstuvwxyz0123 x", "gh [REDACTED] x"),
    ("gh gho_abcdefghijklmnopqrstuvwxyz0123 x", "gh [REDACTED] x"),
    ("gh ghu_abcdefghijklmnopqrstuvwxyz0123 x", "gh [REDACTED] x"),
    ("gh ghs_abcdefghijklmnopqrstuvwxyz0123 x", "gh [REDACTED] x"),
    ("gh ghr_abcdefghijklmnopqrstuvwxyz0123 x", "gh [REDACTED] x"),
    ("gh github_pat_11ABCDEFG0123456789_abcdefghij x", "gh [REDACTED] x"),
    ("slack xoxa-2-1234567890abc x", "slack [REDACTED] x"),
    ("slack xoxb-1234567890-abcdef x", "slack [REDACTED] x"),
    ("slack xoxp-1234567890-abcdef x", "slack [REDACTED] x"),
    ("slack xoxr-1234567890-abcdef x", "slack [REDACTED] x"),
    ("slack xoxs-1234567890-abcdef x", "slack [REDACTED] x"),
    ("aws AKIAIOSFODNN7EXAMPLE x", "aws [REDACTED] x"),
    ("google AIzaSyA1234567890abcdefghijklmnopqrstu x", "google [REDACTED] x"),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlF x",
        "jwt [REDACTED] x",
    ),
]

# text that looks like a secret but is not one: stored unchanged
HARMLESS = [
    "token abc",  # a scheme needs 8 characters after it
    "task sk-1 failed",  # sk- needs 16 characters
    "gh ghp_short",  # GitHub tokens need 20
    "tokens=1024",  # not a secret name
    "my_password_hint=abc",  # the name must end at a word boundary
    "see https://example.com/docs?page=2",
    "mail bob@example.com",
]


@pytest.mark.parametrize(("text", "stored"), TEXT_RULES)
def test_each_text_rule_redacts_exactly(text: str, stored: str) -> None:
    """Each rule replaces exactly the secret, with [REDACTED] (*** for URL passwords)."""
    assert redact_text(text) == stored


@pytest.mark.parametrize("text", HARMLESS)
def test_near_misses_are_kept(text: str) -> None:
    """Text that only resembles a secret is stored as it is."""
    assert redact_text(text) == text


def test_placeholder_text() -> None:
    """The placeholder is the literal [REDACTED]."""
    assert REDACTED == "[REDACTED]"


SECRET_KEYS = [
    "password",
    "PASSWORD",
    "db_password",
    "Db-Passwd",
    "secret",
    "client.secret",
    "api_key",
    "Api-Key",
    "x-api-key",
    "apikey",
    "token",
    "access_token",
    "Authorization",
    "cookie",
    "Set-Cookie",
    "credential",
    "credentials",
    "aws_credentials",
    "private_key",
    "privateKey",
    "private-key",
    "ssh.private_key",
]

PLAIN_KEYS = ["passwords", "tokens", "token_count", "secretary", "my_cookies", "keys", "user"]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_each_secret_key_replaces_its_string_value(key: str) -> None:
    """A string under a secret-looking key (any case, any prefix) is replaced whole."""
    assert normalize_metadata({key: "hunter22 plain words"}) == {key: REDACTED}


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_other_keys_keep_their_value(key: str) -> None:
    """Keys that only contain a secret word keep their value."""
    assert normalize_metadata({key: "hunter22 plain words"}) == {key: "hunter22 plain words"}


def test_secret_keys_are_found_at_any_depth() -> None:
    """Nested mappings and lists are redacted by key and by text too."""
    meta = {"a": {"password": "x", "items": [{"token": "t"}, "Bearer abcdefgh12345678"]}}
    assert normalize_metadata(meta) == {
        "a": {"password": REDACTED, "items": [{"token": REDACTED}, "Bearer [REDACTED]"]}
    }


def test_json_scalars_keep_their_type() -> None:
    """Floats stay floats, ints ints, bools bools, None None; NaN/inf become text."""
    meta = {"f": 1.5, "i": 3, "b": True, "n": None, "nan": float("nan"), "inf": float("inf")}
    out = normalize_metadata(meta)
    assert out == {"f": 1.5, "i": 3, "b": True, "n": None, "nan": "nan", "inf": "inf"}
    assert type(out["f"]) is float and type(out["i"]) is int and type(out["b"]) is bool
    assert json.loads(encode_metadata(out)) == out


def _chain(levels: int) -> dict[str, Any]:
    """``levels`` mappings nested in each other, the innermost holding ``{"leaf": 1}``."""
    meta: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        meta = {"n": meta}
    return meta


def _depth_kept(value: Any) -> int:
    levels = 0
    while isinstance(value, dict):
        levels += 1
        value = value.get("n", value.get("leaf"))
    return levels


def test_nesting_limit_is_32_levels() -> None:
    """Metadata nested 32 mappings deep is kept whole; a 33rd level is cut."""
    assert normalize_metadata(_chain(32)) == _chain(32)
    assert _depth_kept(normalize_metadata(_chain(33))) == 32


def test_metadata_cut_to_fit_keeps_the_values_it_keeps() -> None:
    """When keys are dropped to fit the cap, the kept keys keep their exact values."""
    meta: dict[str, Any] = {"small": "v", "count": 7, "ratio": 0.25}
    meta.update({f"big{i}": "x" * 2000 for i in range(20)})
    out = json.loads(encode_metadata(normalize_metadata(meta), limit=1024))
    assert len(json.dumps(out, separators=(",", ":")).encode()) <= 1024
    assert (out["small"], out["count"], out["ratio"]) == ("v", 7, 0.25)
    assert all(v is not None for v in out.values())


def test_secrets_past_the_nesting_limit_are_redacted() -> None:
    """A secret in a structure cut at the nesting limit is still redacted."""
    deep: dict[str, Any] = {"password": "hunter22", "note": "api_key=abc123def"}
    for _ in range(40):
        deep = {"n": deep}
    assert "hunter22" not in json.dumps(normalize_metadata(deep))
    assert "abc123def" not in json.dumps(normalize_metadata(deep))


def test_unstorable_characters_are_replaced() -> None:
    """NUL characters and lone surrogates (all of U+D800..U+DFFF, nothing else) become
    U+FFFD, in text, in metadata keys and values."""
    assert clean_text("a\x00b\ud800c\udfffd\ue000", 100) == "a\ufffdb\ufffdc\ufffdd\ue000"
    assert normalize_metadata({"k\x00": "a\x00b"}) == {"k\ufffd": "a\ufffdb"}
    stored = encode_metadata(normalize_metadata({"k": "a\ud800b", "n": 1}))
    assert json.loads(stored) == {"k": "a\ufffdb", "n": 1}


def test_clean_text_redacts_only_when_asked_and_keeps_text_at_the_limit() -> None:
    """clean_text redacts when redact=True only; text of exactly ``limit`` is whole."""
    assert clean_text("password=hunter22", 100) == "password=hunter22"
    assert clean_text("password=hunter22", 100, redact=True) == "password=[REDACTED]"
    assert clean_text("x" * 40, 40) == "x" * 40
    assert clean_text(12345, 40) == "12345"


def test_encoded_metadata_is_compact_utf8_json() -> None:
    """Metadata is stored as compact JSON with non-ASCII text as UTF-8, and metadata
    of exactly the limit in bytes is stored whole."""
    assert encode_metadata({"k": "é", "n": [1, 2]}) == '{"k":"é","n":[1,2]}'
    exact = {"k": "é" * 200}  # 8 bytes of JSON around 400 bytes of text
    text = encode_metadata(exact, limit=408)
    assert len(text.encode()) == 408 and json.loads(text) == exact


def test_metadata_must_be_a_mapping_and_says_what_it_got() -> None:
    """A non-mapping is refused with its type name in the message."""
    from exectrack import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="not list"):
        normalize_metadata([1, 2])  # type: ignore[arg-type]


# every other rule of the text scan, one row each (exactly what is stored)
MORE_TEXT_RULES = [
    # the pair's name may be quoted (JSON, Python reprs) and spaced from its value
    ("password = hunter22", "password = [REDACTED]"),
    ("'password': 'hunter22'", "'password': '[REDACTED]'"),
    ("a=1 passphrase=foo bar", "a=1 passphrase=[REDACTED] bar"),
    # a scheme in a secret pair's value is kept, the credential after it is not
    ("authorization: Bearer abcdefgh12345678", "authorization: Bearer [REDACTED]"),
    ("Authorization=Token abcdef0123456789", "Authorization=Token [REDACTED]"),
    ("Authorization: Digest username=bob", "Authorization: Digest [REDACTED]"),
    # a PEM private key, whole, in any case, or cut before its end
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKC\n-----END RSA PRIVATE KEY----- after",
        "[REDACTED] after",
    ),
    ("-----begin private key-----\nMIIE\n-----end private key----- z", "[REDACTED] z"),
    ("key: -----BEGIN PRIVATE KEY-----\nMIIEowIBAAKC", "key: [REDACTED]"),
    # ... and as a secret pair's value, escaped inside a JSON string
    (
        'private_key="-----BEGIN PRIVATE KEY-----\\nMIIEv\\n-----END PRIVATE KEY-----" x',
        'private_key="[REDACTED]" x',
    ),
    # provider formats
    ("stripe sk_live_abcdefghijklmnop1234 x", "stripe [REDACTED] x"),
    ("stripe rk_test_abcdefghijklmnop1234 x", "stripe [REDACTED] x"),
    ("gitlab glpat-abcdefghijklmnopqrst x", "gitlab [REDACTED] x"),
    ("hf hf_abcdefghijklmnopqrstuvwxyz01234 x", "hf [REDACTED] x"),
    ("npm npm_abcdefghijklmnopqrstuvwxyz0123456789 x", "npm [REDACTED] x"),
    ("aws ASIAIOSFODNN7EXAMPLE x", "aws [REDACTED] x"),
    ("google ya29.a0AfH6SMBabcdefghijklmnop x", "google [REDACTED] x"),
    # the shortest of each format that is still a secret
    ("Bearer abcdefgh==", "Bearer [REDACTED]"),
    ("k sk-ABCDEFGHIJKLMNOP", "k [REDACTED]"),
    ("gh ghp_abcdefghijklmnopqrst", "gh [REDACTED]"),
    ("slack xoxb-1234567890", "slack [REDACTED]"),
    ("jwt eyJabcdefgh.abcdefgh.abcdefgh", "jwt [REDACTED]"),
]

# one character short of each format: not a secret
MORE_HARMLESS = [
    "Bearer abcdefg",
    "k sk-ABCDEFGHIJKLMNO",
    "gh ghp_abcdefghijklmnopqrs",
    "gh github_pat_abcdefghijklmnopqrs",
    "slack xoxb-123456789",
    "stripe sk_live_short",
    "jwt eyJabcdefg.abcdefgh.abcdefgh",
    "see https://example.com/a:b@c",  # a colon after the host's path is no password
    "redis://user@host",
]


@pytest.mark.parametrize(("text", "stored"), MORE_TEXT_RULES)
def test_each_other_text_rule_redacts_exactly(text: str, stored: str) -> None:
    """Pairs with quoted names, schemes inside a secret pair, PEM blocks and the
    provider formats: each replaces exactly the secret, in any case."""
    assert redact_text(text) == stored


@pytest.mark.parametrize("text", MORE_HARMLESS)
def test_one_character_short_of_a_format_is_kept(text: str) -> None:
    """Each format's minimum length is part of the rule: one character less is text."""
    assert redact_text(text) == text


# every secret name the key rule knows, written as one word (no separator to split on)
# and as the name of a text pair
ONE_WORD_SECRET_KEYS = [
    "pass",
    "passphrase",
    "passwd",
    "pwd",
    "clientsecret",
    "secretkey",
    "secretaccesskey",
    "privatekey",
    "apikey",
    "accesskey",
    "accountkey",
    "storagekey",
    "subscriptionkey",
    "masterkey",
    "signingkey",
    "encryptionkey",
    "sessionkey",
    "sharedkey",
    "sharedaccesskey",
    "accesstoken",
    "refreshtoken",
    "authtoken",
    "idtoken",
    "sessiontoken",
    "securitytoken",
    "bearertoken",
    "apitoken",
    "sastoken",
    "oauthtoken",
    "csrftoken",
    "authorization",
    "cookie",
    "credential",
    "credentials",
    "signature",
    "sig",
    "dbPassword",
    "DB_PASSWORD",
]

# names that contain a secret word but are not a secret's name
NOT_SECRET_KEYS = [
    "passport",
    "bypass",
    "password_hint",
    "tokenizer",
    "token_count",
    "signed",
    "cookies",
    "session",
    "public_key",
    "key_id",
    "access_key_id",
    "authorizations",
    "keyword",
]


@pytest.mark.parametrize("key", ONE_WORD_SECRET_KEYS)
def test_every_secret_name_is_a_secret_key_and_pair(key: str) -> None:
    """Each name of the key rule redacts a metadata value under it and a text pair
    named so."""
    assert normalize_metadata({key: "hunter22"}) == {key: REDACTED}
    assert redact_text(f"{key}=hunter22 ok") == f"{key}={REDACTED} ok"


@pytest.mark.parametrize("key", NOT_SECRET_KEYS)
def test_names_near_a_secret_name_are_kept(key: str) -> None:
    """A name that only contains a secret word keeps its value, in metadata and text."""
    assert normalize_metadata({key: "hunter22"}) == {key: "hunter22"}
    assert redact_text(f"{key}=hunter22") == f"{key}=hunter22"


def test_the_scan_goes_on_after_every_pair() -> None:
    """A pair (secret or not) does not end the scan: later secrets are redacted too."""
    assert redact_text("user=bob password=hunter22") == "user=bob password=[REDACTED]"
    assert redact_text("password=a&token=b c") == "password=[REDACTED]&token=[REDACTED] c"


def test_secrets_in_metadata_keys_are_redacted() -> None:
    """A secret inside a metadata key (a URL with its password, a token used as a
    key) is redacted like text; the value under it is kept, and a secret key name
    still replaces its value (regression: keys were stored as given)."""
    meta = {
        "postgresql://app:s3cr3t@db:5432/x": 3,
        "calls sk-abcdefghijklmnop1234": "ok",
        "nested": {"Bearer abcdefgh12345678": [1]},
        "password": "hunter22",
    }
    assert normalize_metadata(meta) == {
        "postgresql://app:***@db:5432/x": 3,
        "calls [REDACTED]": "ok",
        "nested": {"Bearer [REDACTED]": [1]},
        "password": REDACTED,
    }
