"""What an RDS PostgreSQL instance for the checkpoint store should look like, and the diff to get there.

The operators describe what exists (``describe_db_instances``' ``DBInstance``) and apply the plan;
re-running with the same spec plans nothing, and a changed spec lists each field it would modify.
Encryption and public access are not choices: a store of agent state is encrypted and private.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

IDENTIFIER = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{0,62}(?<!-)$")
INSTANCE_CLASS = re.compile(r"^db\.[a-z0-9]+\.[a-z0-9]+$")
SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")


class ProvisioningError(ValueError):
    """A request that cannot be carried out as asked; the message says what to change."""


@dataclass(frozen=True)
class InstanceSpec:
    identifier: str
    subnet_group: str
    instance_class: str = "db.t4g.small"
    engine_version: str | None = None
    storage_gb: int = 20
    backup_retention_days: int = 7
    multi_az: bool = False
    deletion_protection: bool = True
    allowed_security_group: str | None = None
    allowed_cidr: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not IDENTIFIER.match(self.identifier or ""):
            problems.append(f"identifier {self.identifier!r}: 1-63 letters, digits or hyphens, starting with a "
                            "letter, no '--' and no trailing hyphen")
        if not INSTANCE_CLASS.match(self.instance_class or ""):
            problems.append(f"instance class {self.instance_class!r}: a class name like db.t4g.small")
        if not 20 <= int(self.storage_gb) <= 65536:
            problems.append(f"storage {self.storage_gb} GB: between 20 and 65536")
        if not 1 <= int(self.backup_retention_days) <= 35:
            problems.append(f"backup retention {self.backup_retention_days} days: between 1 and 35 (0 would turn "
                            "automated backups off)")
        if bool(self.allowed_security_group) == bool(self.allowed_cidr):
            problems.append("give exactly one of the app's security group or a CIDR allowed on 5432")
        if self.allowed_security_group and not SECURITY_GROUP.match(self.allowed_security_group):
            problems.append(f"security group {self.allowed_security_group!r}: an id like sg-0123abcd")
        if self.allowed_cidr:
            try:
                net = ipaddress.ip_network(self.allowed_cidr, strict=True)
            except ValueError as exc:
                problems.append(f"CIDR {self.allowed_cidr!r}: {exc}")
            else:
                if net.prefixlen == 0:
                    problems.append(f"CIDR {self.allowed_cidr}: opens 5432 to everyone; give the app subnet")
        if not re.match(r"^[a-zA-Z0-9 ._-]{1,255}$", self.subnet_group or ""):
            problems.append(f"subnet group {self.subnet_group!r}: an existing or new DB subnet group name")
        if problems:
            raise ProvisioningError("Fix the params and trigger a new run: " + "; ".join(problems) + ".")


# InstanceSpec field -> (DBInstance key, ModifyDBInstance argument)
MODIFIABLE = {
    "instance_class": ("DBInstanceClass", "DBInstanceClass"),
    "storage_gb": ("AllocatedStorage", "AllocatedStorage"),
    "backup_retention_days": ("BackupRetentionPeriod", "BackupRetentionPeriod"),
    "multi_az": ("MultiAZ", "MultiAZ"),
    "deletion_protection": ("DeletionProtection", "DeletionProtection"),
    "engine_version": ("EngineVersion", "EngineVersion"),
}


def create_arguments(spec: InstanceSpec, security_group_id: str) -> dict[str, Any]:
    """``create_db_instance`` arguments: encrypted, private, the password generated and kept by RDS
    in Secrets Manager (``ManageMasterUserPassword``), so it never passes through Airflow."""
    args = {
        "DBInstanceIdentifier": spec.identifier,
        "DBInstanceClass": spec.instance_class,
        "Engine": "postgres",
        "AllocatedStorage": int(spec.storage_gb),
        "BackupRetentionPeriod": int(spec.backup_retention_days),
        "MultiAZ": bool(spec.multi_az),
        "DeletionProtection": bool(spec.deletion_protection),
        "DBSubnetGroupName": spec.subnet_group,
        "VpcSecurityGroupIds": [security_group_id],
        "StorageEncrypted": True,
        "PubliclyAccessible": False,
        "MasterUsername": "checkpoint_admin",
        "ManageMasterUserPassword": True,
        "Port": 5432,
        "DBName": "checkpoints",
        "Tags": [{"Key": "managed-by", "Value": "checkpoint-ops"}],
    }
    if spec.engine_version:
        args["EngineVersion"] = spec.engine_version
    return args


def plan_instance(spec: InstanceSpec, existing: dict[str, Any] | None) -> dict[str, Any]:
    """``{"action": "create" | "modify" | "none", "changes": [...]}`` for the instance ``existing`` (or none).

    Raises ProvisioningError for what no modification can fix: the identifier taken by another
    engine, or an unencrypted instance (encryption cannot be switched on in place)."""
    if existing is None:
        return {"action": "create", "changes": [{"field": "instance", "current": None, "wanted": spec.identifier}]}
    if existing.get("Engine") != "postgres":
        raise ProvisioningError(
            f"{spec.identifier} is already used by a {existing.get('Engine')} instance; nothing was changed. "
            "Choose another identifier.")
    if not existing.get("StorageEncrypted"):
        raise ProvisioningError(
            f"{spec.identifier} exists without storage encryption, which cannot be turned on in place: restore an "
            "encrypted copy of a snapshot under a new identifier and provision that one.")
    changes = []
    for name, (key, _) in MODIFIABLE.items():
        wanted = getattr(spec, name)
        if wanted is None:
            continue
        current = existing.get(key)
        if name == "engine_version" and str(current or "").startswith(f"{wanted}."):
            continue  # "16" is satisfied by 16.3
        if current != wanted:
            changes.append({"field": name, "current": current, "wanted": wanted})
    if existing.get("PubliclyAccessible"):
        changes.append({"field": "publicly_accessible", "current": True, "wanted": False})
    return {"action": "modify" if changes else "none", "changes": changes}


def modify_arguments(spec: InstanceSpec, plan: dict[str, Any], *, apply_immediately: bool) -> dict[str, Any]:
    """``modify_db_instance`` arguments for a plan's changes (only the fields that differ)."""
    args: dict[str, Any] = {"DBInstanceIdentifier": spec.identifier, "ApplyImmediately": bool(apply_immediately)}
    for change in plan["changes"]:
        if change["field"] == "publicly_accessible":
            args["PubliclyAccessible"] = False
        else:
            args[MODIFIABLE[change["field"]][1]] = change["wanted"]
    if "EngineVersion" in args:
        args["AllowMajorVersionUpgrade"] = True
    return args


def describe_plan(spec: InstanceSpec, plan: dict[str, Any]) -> str:
    if plan["action"] == "none":
        return f"{spec.identifier} already matches the params: nothing to change."
    if plan["action"] == "create":
        return (f"create {spec.identifier}: postgres {spec.engine_version or '(default version)'} "
                f"{spec.instance_class}, {spec.storage_gb} GB encrypted, backups {spec.backup_retention_days} days, "
                f"Multi-AZ {spec.multi_az}, private, password in Secrets Manager")
    return f"modify {spec.identifier}: " + "; ".join(
        f"{c['field']} {c['current']} -> {c['wanted']}" for c in plan["changes"])
