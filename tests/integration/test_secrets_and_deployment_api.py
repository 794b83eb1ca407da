"""Secrets and deployment submission through the real app and PostgreSQL: values encrypted
at rest and never returned, rotation, roles, 422s, and what a deployment job stores."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from core import db
from core.api_keys import Role
from core.errors import SecretNotFound
from core.models import DeploymentTarget, Job, Secret
from core.secrets import vault
from core.settings import Settings
from tests import services

VALUE = "tok-" + uuid.uuid4().hex


def headers(sessions: db.Sessions, settings: Settings, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {services.new_api_key(sessions, settings, role)}"}


def test_secrets_are_stored_encrypted_and_never_returned(client, sessions, settings):
    operator = headers(sessions, settings, Role.operator)
    first = client.put("/v1/secrets/deploy-token", json={"value": VALUE}, headers=operator)
    again = client.put("/v1/secrets/deploy-token", json={"value": VALUE + "2"}, headers=operator)
    assert first.status_code == again.status_code == 200
    assert (first.json()["version"], again.json()["version"]) == (1, 2)
    listed = client.get("/v1/secrets", headers=operator)
    assert [item["name"] for item in listed.json()["items"]] == ["deploy-token"]
    assert VALUE not in first.text + again.text + listed.text
    with db.transaction(sessions) as session:
        stored = session.scalar(sa.select(Secret.ciphertext))
        assert stored is not None
        assert VALUE not in stored
        plain = vault.read_values(
            session, vault.Cipher.from_settings(settings), names={"deploy-token"}
        )
    assert plain == {"deploy-token": VALUE + "2"}

    assert client.delete("/v1/secrets/deploy-token", headers=operator).status_code == 204
    missing = client.delete("/v1/secrets/deploy-token", headers=operator)
    assert (missing.status_code, missing.json()["code"]) == (404, "secret_not_found")


def test_secrets_need_an_operator_and_valid_input(client, sessions, settings):
    submitter = headers(sessions, settings, Role.submitter)
    operator = headers(sessions, settings, Role.operator)
    assert client.put("/v1/secrets/x", json={"value": "v"}, headers=submitter).status_code == 403
    assert client.get("/v1/secrets", headers=submitter).status_code == 403
    bad_name = client.put("/v1/secrets/bad%20name", json={"value": VALUE}, headers=operator)
    assert bad_name.status_code == 422
    empty = client.put("/v1/secrets/x", json={"value": ""}, headers=operator)
    assert empty.status_code == 422
    wrong_type = client.put("/v1/secrets/x", json={"value": 5, "v": VALUE}, headers=operator)
    assert wrong_type.status_code == 422
    assert VALUE not in bad_name.text + wrong_type.text


def test_rotation_reencrypts_with_the_new_key(sessions, settings):
    old = vault.Cipher.from_settings(settings)
    with db.transaction(sessions) as session:
        vault.put(session, old, name="a", value="alpha")
        vault.put(session, old, name="b", value='{"x": 1}')
    new_key = Fernet.generate_key().decode()
    both = vault.Cipher([new_key, settings.secrets_key.get_secret_value()])
    with db.transaction(sessions) as session:
        assert vault.rotate_all(session, both) == 2
    only_new = vault.Cipher([new_key])
    with db.transaction(sessions) as session:
        assert vault.read_values(session, only_new, names={"a", "b"}) == {
            "a": "alpha",
            "b": '{"x": 1}',
        }
        with pytest.raises(vault.VaultKeyError):
            vault.read_values(session, old, names={"a"})
        with pytest.raises(SecretNotFound):
            vault.read_values(session, only_new, names={"a", "missing"})
        assert {info.version for info in vault.list_secrets(session)} == {1}


def test_deployment_job_stores_names_limits_and_targets(client, sessions, settings):
    submitter = headers(sessions, settings, Role.submitter)
    body = {
        "source": {"git": {"url": "https://git.example.com/ops.git", "ref": "main"}},
        "playbook": "site.yml",
        "targets": [{"name": "web", "host": "10.0.0.5"}, {"name": "db", "host": "10.0.0.6"}],
        "github_token_ref": "gh",
        "ssh_key_ref": "key",
        "limits": {"timeout_seconds": 120},
    }
    response = client.post(
        "/v1/deployments", json=body, headers={**submitter, "Idempotency-Key": "d1"}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "deployment"
    assert job["time_limit_seconds"] == 120
    assert job["params"]["github_token_ref"] == "gh"
    assert job["params"]["limits"]["memory_mb"] == settings.deploy_memory_mb
    replay = client.post(
        "/v1/deployments", json=body, headers={**submitter, "Idempotency-Key": "d1"}
    )
    assert (replay.status_code, replay.json()["id"]) == (200, job["id"])
    with db.transaction(sessions) as session:
        targets = session.scalars(
            sa.select(DeploymentTarget.target).where(DeploymentTarget.job_id == job["id"])
        )
        assert sorted(targets) == ["10.0.0.5:22", "10.0.0.6:22"]
        assert session.get(Job, uuid.UUID(job["id"])) is not None


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"playbook": "../x.yml"}, "body.playbook"),
        ({"limits": {"memory_mb": 10**6}}, "limits.memory_mb"),
        ({"limits": {"timeout_seconds": 10**7}}, "limits.timeout_seconds"),
        ({"retry": {"max_attempts": 10**3}}, "retry.max_attempts"),
        ({"source": {"git": {"url": "ftp://x/r.git"}}}, "body.source.git.url"),
    ],
)
def test_deployment_validation_answers_422_with_where(client, sessions, settings, patch, field):
    submitter = headers(sessions, settings, Role.submitter)
    body = {
        "source": {"project": "demo"},
        "playbook": "site.yml",
        "targets": [{"name": "web", "host": "10.0.0.5"}],
        **patch,
    }
    response = client.post("/v1/deployments", json=body, headers=submitter)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["where"]["field"] == field
