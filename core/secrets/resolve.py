"""Turning a deployment's secret references (names) into values, in the worker, at run time.

Only names travel in requests, job params, messages and events; this is the one place they
become values, and it also builds the ``Redactor`` that hides those values in everything
the run produces. A missing secret fails the job with ``secret_not_found`` naming the
reference, never a value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from core.errors import JobFailed, SecretNotFound
from core.secrets import vault
from core.secrets.redact import Redactor, leaf_strings

VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SecretRefs:
    github_token_ref: str | None = None
    secrets_ref: str | None = None
    ssh_key_ref: str | None = None

    def named(self) -> dict[str, str]:
        """field -> secret name, for the refs that are set."""
        refs = {
            "github_token_ref": self.github_token_ref,
            "secrets_ref": self.secrets_ref,
            "ssh_key_ref": self.ssh_key_ref,
        }
        return {field: name for field, name in refs.items() if name}


@dataclass(frozen=True)
class Resolved:
    git_token: str | None = None
    ssh_key: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    redactor: Redactor = field(default_factory=Redactor)
    # Every resolved value: what the redactor hides, and what the process's logs must mask.
    values: tuple[str, ...] = ()


def _variables(ref: str, raw: str) -> dict[str, Any]:
    try:
        variables = json.loads(raw)
    except ValueError:
        variables = None
    if not isinstance(variables, dict):
        raise JobFailed(
            f"Secret {ref!r} (secrets_ref) must hold a JSON object of variables.",
            code="invalid_secret",
            where={"field": "secrets_ref", "secret": ref},
        )
    bad = sorted(name for name in variables if not VARIABLE_NAME.fullmatch(name))
    if bad:
        raise JobFailed(
            f"Secret {ref!r} (secrets_ref) has keys that are not variable names: {bad[0]!r}.",
            code="invalid_secret",
            where={"field": "secrets_ref", "secret": ref},
        )
    return variables


def resolve(session: Session, cipher: vault.Cipher, refs: SecretRefs) -> Resolved:
    named = refs.named()
    if not named:
        return Resolved()
    try:
        values = vault.read_values(session, cipher, names=set(named.values()))
    except SecretNotFound as error:
        missing = error.where["secret"] if error.where else "?"
        fields = sorted(f for f, name in named.items() if name == missing)
        raise SecretNotFound(
            f"Secret {missing!r} ({', '.join(fields)}) does not exist.",
            where={"field": fields[0] if fields else None, "secret": missing},
        ) from None
    git_token = values.get(refs.github_token_ref or "")
    ssh_key = values.get(refs.ssh_key_ref or "")
    variables = _variables(refs.secrets_ref, values[refs.secrets_ref]) if refs.secrets_ref else {}
    hidden = [value for value in (git_token, ssh_key) if value]
    if refs.secrets_ref:
        hidden += [values[refs.secrets_ref], *leaf_strings(variables)]
    # A key file must end with a newline for ssh to read it.
    if ssh_key is not None and not ssh_key.endswith("\n"):
        ssh_key += "\n"
    return Resolved(
        git_token=git_token,
        ssh_key=ssh_key,
        variables=variables,
        redactor=Redactor(hidden),
        values=tuple(hidden),
    )
