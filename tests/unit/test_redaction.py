import pytest

from bridge.domain.redaction import Redactor, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://bridge:hunter2@db.example.com:5432/postgres",
            "postgresql://bridge:***@db.example.com:5432/postgres",
        ),
        ("postgresql://bridge@db/postgres", "postgresql://bridge@db/postgres"),
        (
            "postgresql://u:p%40ss@[::1]:6543/db?sslmode=require",
            "postgresql://u:***@[::1]:6543/db?sslmode=require",
        ),
        (
            "wss://api.example.com/stream?token=abc123&tickers=SPY",
            "wss://api.example.com/stream?token=***&tickers=SPY",
        ),
        ("wss://x/y?apiKey=K1&API_KEY=K2", "wss://x/y?apiKey=***&API_KEY=***"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_urls_lose_their_secrets_and_nothing_else(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_registered_secrets_are_masked_anywhere_longest_first() -> None:
    redactor = Redactor()
    redactor.add("abcd")
    redactor.add("abcdef-123")
    redactor.add("x")  # too short to mask safely
    assert redactor.redact("key abcdef-123 then abcd, x") == "key *** then ***, x"


def test_secret_shaped_fragments_are_masked_without_registration() -> None:
    redactor = Redactor()
    text = (
        'Authorization: Bearer eyJhbGciOi.xyz {"auth-token": "sess-999"} password=topsecret '
        "connecting to postgresql://a:b@h/d"
    )
    redacted = redactor.redact(text)
    for secret in ("eyJhbGciOi.xyz", "sess-999", "topsecret", ":b@"):
        assert secret not in redacted
    assert "postgresql://a:***@h/d" in redacted
