"""The RDS instance plan: create from nothing, nothing on a re-run, each changed field listed."""

from __future__ import annotations

import pytest

from include.checkpoint_core.provisioning.plan import (
    InstanceSpec, ProvisioningError, create_arguments, describe_plan, modify_arguments, plan_instance,
)

SPEC = InstanceSpec(identifier="checkpoints", subnet_group="checkpoints-db", allowed_security_group="sg-0123abcd")


def described(**overrides):
    """A DBInstance as describe_db_instances returns it for what create_arguments asked."""
    args = create_arguments(SPEC, "sg-0fedcba9")
    return {"DBInstanceIdentifier": SPEC.identifier, "Engine": "postgres", "EngineVersion": "16.3",
            "DBInstanceClass": args["DBInstanceClass"], "AllocatedStorage": args["AllocatedStorage"],
            "BackupRetentionPeriod": args["BackupRetentionPeriod"], "MultiAZ": False, "DeletionProtection": True,
            "StorageEncrypted": True, "PubliclyAccessible": False, **overrides}


def test_create_arguments_are_private_encrypted_and_passwordless():
    args = create_arguments(SPEC, "sg-0fedcba9")
    assert args["StorageEncrypted"] is True and args["PubliclyAccessible"] is False
    assert args["ManageMasterUserPassword"] is True and "MasterUserPassword" not in args
    assert args["BackupRetentionPeriod"] == 7 and args["DBInstanceClass"] == "db.t4g.small"
    assert args["VpcSecurityGroupIds"] == ["sg-0fedcba9"]


def test_from_nothing_then_nothing():
    assert plan_instance(SPEC, None)["action"] == "create"
    again = plan_instance(SPEC, described())
    assert again == {"action": "none", "changes": []}
    assert "nothing to change" in describe_plan(SPEC, again)


def test_changed_params_list_each_field():
    spec = InstanceSpec(identifier="checkpoints", subnet_group="checkpoints-db", allowed_cidr="10.0.1.0/24",
                        instance_class="db.m5.large", backup_retention_days=14, engine_version="16")
    plan = plan_instance(spec, described(PubliclyAccessible=True))
    assert plan["action"] == "modify"
    assert {c["field"] for c in plan["changes"]} == {"instance_class", "backup_retention_days", "publicly_accessible"}
    args = modify_arguments(spec, plan, apply_immediately=False)
    assert args == {"DBInstanceIdentifier": "checkpoints", "ApplyImmediately": False, "DBInstanceClass": "db.m5.large",
                    "BackupRetentionPeriod": 14, "PubliclyAccessible": False}
    assert "instance_class db.t4g.small -> db.m5.large" in describe_plan(spec, plan)


def test_identifier_of_another_engine_is_refused():
    with pytest.raises(ProvisioningError, match="already used by a mysql instance"):
        plan_instance(SPEC, described(Engine="mysql"))


def test_unencrypted_instance_is_refused():
    with pytest.raises(ProvisioningError, match="cannot be turned on in place"):
        plan_instance(SPEC, described(StorageEncrypted=False))


@pytest.mark.parametrize("overrides, message", [
    ({"identifier": "1bad"}, "identifier"),
    ({"identifier": "two--hyphens"}, "identifier"),
    ({"instance_class": "t4g.small"}, "instance class"),
    ({"storage_gb": 5}, "storage"),
    ({"backup_retention_days": 0}, "backups off"),
    ({"allowed_security_group": None}, "exactly one"),
    ({"allowed_cidr": "10.0.0.0/8"}, "exactly one"),
    ({"allowed_security_group": None, "allowed_cidr": "0.0.0.0/0"}, "everyone"),
    ({"allowed_security_group": None, "allowed_cidr": "10.0.1.5/24"}, "CIDR"),
    ({"allowed_security_group": "default"}, "security group"),
])
def test_bad_input_says_what_to_fix(overrides, message):
    fields = {"identifier": "checkpoints", "subnet_group": "checkpoints-db", "allowed_security_group": "sg-0123abcd",
              **overrides}
    with pytest.raises(ProvisioningError, match=message):
        InstanceSpec(**fields)
