"""The Ansible inventory of a deployment, generated from its targets (never from user YAML)."""

from __future__ import annotations

from typing import Any

from core.deployments.spec import Target


def build_inventory(targets: list[Target], *, key_file: str | None) -> dict[str, Any]:
    """``all`` holds every target with its address, port and user (and the private key
    file, when the deployment has ``ssh_key_ref``); each group lists its members."""
    hosts: dict[str, dict[str, Any]] = {}
    groups: dict[str, dict[str, Any]] = {}
    for target in targets:
        host: dict[str, Any] = {
            "ansible_host": target.host.strip("[]"),
            "ansible_port": target.port,
            "ansible_user": target.user,
        }
        if key_file is not None:
            host["ansible_ssh_private_key_file"] = key_file
        hosts[target.name] = host
        for group in target.groups:
            groups.setdefault(group, {"hosts": {}})["hosts"][target.name] = {}
    inventory: dict[str, Any] = {"all": {"hosts": hosts}}
    if groups:
        inventory["all"]["children"] = groups
    return inventory
