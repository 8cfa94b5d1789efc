"""MIGRATE's AUTH/AUTH2 arguments come from the admin connection's own credentials."""

from __future__ import annotations

import redis
from redis.credentials import UsernamePasswordCredentialProvider

from controller.migration import migrate_auth
from controller.topology import connector


def test_no_password_no_auth() -> None:
    assert migrate_auth(redis.Redis(port=1)) == []


def test_requirepass_is_auth() -> None:
    assert migrate_auth(connector(password="pw")("127.0.0.1:1")) == ["AUTH", "pw"]


def test_acl_user_is_auth2() -> None:
    client = connector(username="ops", password="pw")("127.0.0.1:1")
    assert migrate_auth(client) == ["AUTH2", "ops", "pw"]


def test_credential_provider() -> None:
    with_user = UsernamePasswordCredentialProvider("ops", "pw")
    assert migrate_auth(redis.Redis(port=1, credential_provider=with_user)) == [
        "AUTH2", "ops", "pw",
    ]  # fmt: skip
    without = UsernamePasswordCredentialProvider(password="pw")
    assert migrate_auth(redis.Redis(port=1, credential_provider=without)) == ["AUTH", "pw"]
