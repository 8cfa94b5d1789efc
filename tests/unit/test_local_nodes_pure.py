"""The local platform's pure parts: restart backoff, a replica's environment, a new
node's config file."""

from __future__ import annotations

from pathlib import Path

from controller.platform.local import replica_env, restart_delay
from controller.platform.local_nodes import NodeSettings, render_config


def test_restart_delay_doubles_from_the_base_up_to_the_cap() -> None:
    delays = [restart_delay(n, base=1.0, cap=30.0) for n in range(8)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert restart_delay(10_000, base=0.5, cap=60.0) == 60.0  # no overflow


def test_replica_env_keeps_only_basics_and_named_variables() -> None:
    environ = {"PATH": "/bin", "HOME": "/h", "SECRET": "s", "QUEUE": "q", "LANG": "C"}
    env = replica_env("mail", 2, ["QUEUE", "MODE=a=b", "MISSING"], environ)
    assert env == {"PATH": "/bin", "HOME": "/h", "LANG": "C", "QUEUE": "q", "MODE": "a=b",
                   "SLOTPILOT_TARGET": "mail", "SLOTPILOT_REPLICA": "2"}  # fmt: skip


def test_config_file_carries_inherited_settings_users_and_quoted_secrets() -> None:
    settings = NodeSettings(
        binary="/bin/true", host="127.0.0.1",
        inherited=(("save", "3600 1"), ("appendonly", "yes"), ("protected-mode", "yes")),
        acl_users=("user default on #ab12 ~* &* +@all",), masteruser="app",
        masterauth='p"a\\ss\nword',
    )  # fmt: skip
    text = render_config(settings, 7001, Path("/var/lib/node 1"))
    lines = text.splitlines()
    assert "port 7001" in lines and 'save "3600 1"' in lines and 'appendonly "yes"' in lines
    assert 'protected-mode "yes"' in lines and 'dir "/var/lib/node 1"' in lines
    assert "user default on #ab12 ~* &* +@all" in lines and 'masteruser "app"' in lines
    assert 'masterauth "p\\"a\\\\ss\\x0aword"' in lines  # one line, the server's escapes
    assert "cluster-announce-ip 127.0.0.1" in lines
    assert "--" not in text and "protected-mode no" not in text
