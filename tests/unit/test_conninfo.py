"""Connection strings and connection errors never show a secret, and stay readable otherwise."""

from __future__ import annotations

import psycopg
import pytest

from bridge.adapters.postgres.conninfo import describe_connection_error, redact_conninfo


@pytest.mark.parametrize(
    ("conninfo", "expected"),
    [
        (
            "postgresql://bridge:Sup3rSecret@db.example.com:5432/postgres",
            "postgresql://bridge:***@db.example.com:5432/postgres",
        ),
        (
            "postgres://postgres.abcdef:p%40ss%2Fw0rd@aws-0-eu-central-1.pooler.supabase.com:6543/postgres?sslmode=require",
            "postgres://postgres.abcdef:***@aws-0-eu-central-1.pooler.supabase.com:6543/postgres?sslmode=require",
        ),
        ("postgresql://bridge@db/postgres", "postgresql://bridge@db/postgres"),
        ("postgresql://postgres:@/postgres?host=/tmp/pg", "postgresql://postgres:@/postgres?host=/tmp/pg"),
        ("postgresql://u:Secret6@[::1]:6543,h2:5432/db", "postgresql://u:***@[::1]:6543,h2:5432/db"),
        (
            "postgresql://u@h/db?password=Secret1&sslmode=require&application_name=bridge",
            "postgresql://u@h/db?password=***&sslmode=require&application_name=bridge",
        ),
        ("postgresql://u@h/db?sslpassword=Secret2", "postgresql://u@h/db?sslpassword=***"),
        ("postgresql://u@h/db?access_token=T0ken&apikey=K3y", "postgresql://u@h/db?access_token=***&apikey=***"),
        # unencoded special characters in the password: still masked whole, host still shown
        ("postgresql://u:pa/ss@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u:pa?ss@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u:pa#ss@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
        # key=value strings
        ("host=h port=5432 user=u password=Secret3 dbname=d", "user=u password=*** dbname=d host=h port=5432"),
        ("host=h password='Sec ret4' sslpassword=Secret5", "password=*** host=h sslpassword=***"),
        ("host=h password='unterminated", "host=h password=***"),
        ("host=h password=Sup3r Secret port=5432", "host=h password=*** port=5432"),
        ("", ""),
    ],
)
def test_redact_conninfo(conninfo: str, expected: str) -> None:
    assert redact_conninfo(conninfo) == expected


def test_a_connection_error_is_one_line_and_names_where() -> None:
    url = "postgresql://bridge:Sup3rSecret@127.0.0.1:1/postgres"
    exc = psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
    )
    assert describe_connection_error(exc, url) == (
        "cannot reach the database at postgresql://bridge:***@127.0.0.1:1/postgres: connection failed: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused '
        "Is the server running on that host and accepting TCP/IP connections?"
    )


@pytest.mark.parametrize(
    ("conninfo", "reason"),
    [
        # a server or proxy that echoes the password, a URL or a password= fragment back
        ("postgresql://bridge:Sup3rSecret@h/db", "authentication failed for password Sup3rSecret"),
        ("postgresql://bridge:Sup3r%23Secret@h/db", "bad password 'Sup3r#Secret'"),
        ("host=h password=Sup3rSecret", "while connecting to postgresql://x:Sup3rSecret@h/db"),
        ("host=h", "options: password=Sup3rSecret"),
        # libpq misreads an unencoded '@' and quotes the rest of the password as the host
        ("postgresql://bridge:Sup3r@Secret@h/db", "failed to resolve host 'Secret@h'"),
        # libpq's parse errors quote the text around the problem
        ("host=h password=Sup3r Secret", 'missing "=" after "Secret" in connection info string'),
    ],
)
def test_a_connection_error_never_shows_a_secret(conninfo: str, reason: str) -> None:
    message = describe_connection_error(psycopg.OperationalError(reason), conninfo)
    assert "Secret" not in message
    assert "\n" not in message
    assert message.startswith("cannot reach the database at ")
