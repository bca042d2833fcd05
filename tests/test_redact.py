"""Passwords never reach output: every form a database URL can carry one in, redacted wherever the tool writes."""

from __future__ import annotations

import pytest

from unlearn_search import redact, tracking

FORMS = [
    # (URL, its secret, the redacted URL)
    ("postgresql://bob:hunter2@db:5432/optuna", "hunter2", "postgresql://bob:***@db:5432/optuna"),
    ("postgresql://bob@db/optuna?password=hunter2", "hunter2", "postgresql://bob@db/optuna?password=***"),
    ("postgresql://bob@db/optuna?sslmode=require&password=hunter2&x=1", "hunter2",
     "postgresql://bob@db/optuna?sslmode=require&password=***&x=1"),
    ("postgresql://bob@db/optuna?PASSWORD=hunter2", "hunter2", "postgresql://bob@db/optuna?PASSWORD=***"),
    ("postgresql://bob:hun/ter2@db/optuna", "hun/ter2", "postgresql://bob:***@db/optuna"),
    ("postgresql://bob:hun#ter2@db/optuna", "hun#ter2", "postgresql://bob:***@db/optuna"),
    ("postgresql://bob:hun@ter2@db/optuna", "hun@ter2", "postgresql://bob:***@db/optuna"),
    ("postgresql://bob:hun%40ter2@db/optuna", "hun%40ter2", "postgresql://bob:***@db/optuna"),
    ("mysql+pymysql://bob:hunter2@db/optuna?charset=utf8", "hunter2", "mysql+pymysql://bob:***@db/optuna?charset=utf8"),
    ("postgresql://bob@db/optuna?sslpassword=hunter2", "hunter2", "postgresql://bob@db/optuna?sslpassword=***"),
    ("http://alice:hunter2@mlflow.example:5000", "hunter2", "http://alice:***@mlflow.example:5000"),
    ("https://mlflow.example/?token=hunter2", "hunter2", "https://mlflow.example/?token=***"),
]


@pytest.mark.parametrize("url, secret, expected", FORMS)
def test_every_password_form_is_redacted(url, secret, expected):
    assert redact.secrets_in(url) == [secret]
    assert redact.redact_uri(url) == expected == tracking.redact_uri(url)
    assert secret not in redact.redact(f"could not connect to {url}: password {secret!r} rejected", url)
    assert redact.has_literal_secret(url)


@pytest.mark.parametrize("url", [
    "postgresql://bob:${PGPASSWORD}@db/optuna", "postgresql://bob:$PGPASSWORD@db/optuna", "sqlite:///optuna.db",
    "optuna_journal.log", "postgresql://bob@db:5432/optuna", "postgresql://db:5432/optuna", "file:///tmp/j.log",
])
def test_urls_without_a_literal_secret_are_left_as_they_are(url):
    assert redact.redact_uri(url) == url and not redact.has_literal_secret(url)


@pytest.mark.parametrize("url, secret", [(u, s) for u, s, _ in FORMS if u.startswith(("postgresql", "mysql"))])
def test_a_bad_storage_error_never_shows_the_password(mlflow_store, capsys, cli_exit, url, secret, caplog):
    url = url.replace("@db", "@127.0.0.1:9")  # nothing listens there: the connection fails at once
    assert cli_exit(["tune", "--method", "gd", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert secret not in err and secret not in caplog.text and "***" in err
    assert "spells a password out" in caplog.text and "${PGPASSWORD}" in caplog.text
