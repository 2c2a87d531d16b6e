"""The one redaction helper: URLs shown on purpose (configuration, webhooks) and the net under every log line."""

from __future__ import annotations

import pytest

from prebuildd.domain.redaction import REDACTED, redact_url, scrub_credentials


@pytest.mark.parametrize(
    ("url", "keep_path", "shown"),
    [
        ("postgresql://pb:s3cret@db:5432/prebuildd", True, f"postgresql://pb:{REDACTED}@db:5432/prebuildd"),
        (
            "postgresql://pb@db/prebuildd?sslmode=require&password=s3cret",
            True,
            f"postgresql://pb@db/prebuildd?sslmode=require&password={REDACTED}",
        ),
        (
            "host=db user=pb password='s 3cret' dbname=pb",
            True,
            f"host=db user=pb password={REDACTED} dbname=pb",
        ),
        (
            "https://hooks.slack.com/services/T0/B0/XXXXsecret",
            False,
            f"https://hooks.slack.com/{REDACTED}",
        ),
        (
            "https://bot:s3cret@hooks.example.com:8443/notify?token=abc",
            False,
            f"https://{REDACTED}:{REDACTED}@hooks.example.com:8443/{REDACTED}?token={REDACTED}",
        ),
        ("https://hooks.example.com/", False, "https://hooks.example.com/"),
    ],
)
def test_a_url_keeps_only_what_is_not_secret(url: str, keep_path: bool, shown: str) -> None:
    assert redact_url(url, keep_path=keep_path) == shown
    assert "s3cret" not in redact_url(url, keep_path=keep_path)


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        (
            "connection to postgresql://pb:s3cret@db:5432/x failed",
            f"connection to postgresql://pb:{REDACTED}@db:5432/x failed",
        ),
        ("POST https://u:p%40ss@h/x", f"POST https://u:{REDACTED}@h/x"),
        ("dsn: host=db password=s3cret port=5432", f"dsn: host=db password={REDACTED} port=5432"),
        ("GET /hook?token=abc&x=1", f"GET /hook?token={REDACTED}&x=1"),
        ("http://host:8080/path@x and token_id=7", "http://host:8080/path@x and token_id=7"),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_free_text_loses_passwords_and_tokens(text: str, scrubbed: str) -> None:
    assert scrub_credentials(text) == scrubbed
