"""`conveyor secrets` for real (the console script, the test database): values from stdin,
never printed; rotation to a new key; and `conveyor worker` leaving deployments to
workers of their own."""

from __future__ import annotations

from cryptography.fernet import Fernet

from cli.main import build_parser
from core import db
from core.secrets import vault
from tests.integration.test_cli import cli_env, conveyor, ok

VALUE = "s3cret-" + Fernet.generate_key().decode()[:12]


def test_set_list_rotate_delete(database_url, sessions, tmp_path):
    old = Fernet.generate_key().decode()
    new = Fernet.generate_key().decode()
    env = cli_env(CONVEYOR_DATABASE_URL=database_url, CONVEYOR_SECRETS_KEY=old)
    stored = ok(
        conveyor("secrets", "set", "deploy-key", env=env, cwd=tmp_path, input_text=VALUE + "\n")
    )
    assert "version 1" in stored.stdout
    listed = ok(conveyor("secrets", "list", env=env, cwd=tmp_path))
    assert "deploy-key" in listed.stdout
    assert VALUE not in stored.stdout + stored.stderr + listed.stdout + listed.stderr

    rotating = {**env, "CONVEYOR_SECRETS_KEY": f"{new},{old}"}
    assert (
        "Re-encrypted 1 secret"
        in ok(conveyor("secrets", "rotate-key", env=rotating, cwd=tmp_path)).stdout
    )
    with db.transaction(sessions) as session:
        # The trailing newline of `echo` is dropped; only the new key reads it now.
        assert vault.read_values(session, vault.Cipher([new]), names={"deploy-key"}) == {
            "deploy-key": VALUE
        }

    ok(conveyor("secrets", "delete", "deploy-key", env=rotating, cwd=tmp_path))
    again = conveyor("secrets", "delete", "deploy-key", env=rotating, cwd=tmp_path)
    assert again.returncode == 1
    assert "No secret named 'deploy-key'" in again.stderr
    assert "Traceback" not in again.stderr


def test_worker_serves_default_and_imports_unless_told_deployments():
    parser = build_parser()
    assert parser.parse_args(["worker"]).queues == ["default", "imports"]
    assert parser.parse_args(["worker", "-Q", "deployments"]).queues == ["deployments"]
