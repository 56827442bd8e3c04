"""RdsCheckpointProvisionOperator against moto's RDS, EC2 and Secrets Manager over HTTP."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from checkpoint_ops.operators.provisioning import RdsCheckpointProvisionOperator
from tests.provisioning.conftest import no_credentials_conn


def operator(aws, **overrides):
    kwargs = dict(task_id="provision", aws_conn_id="aws_checkpoints", identifier=aws["identifier"],
                  subnet_group=aws["subnet_group"], allowed_security_group=aws["app_sg"], dry_run=False,
                  poll_seconds=0.05, timeout_minutes=0.01)
    return RdsCheckpointProvisionOperator(**{**kwargs, **overrides})


def test_provision_from_nothing_then_a_rerun_is_a_no_op(aws, capfd):
    dry = operator(aws, dry_run=True).execute({})
    assert dry["dry_run"] and dry["plan"]["action"] == "create" and dry["changed"] == []
    assert not aws["rds"].describe_db_instances()["DBInstances"] or all(
        i["DBInstanceIdentifier"] != aws["identifier"] for i in aws["rds"].describe_db_instances()["DBInstances"])

    report = operator(aws).execute({})
    instance = aws["rds"].describe_db_instances(DBInstanceIdentifier=aws["identifier"])["DBInstances"][0]
    assert instance["StorageEncrypted"] and not instance["PubliclyAccessible"]
    assert instance["BackupRetentionPeriod"] == 7 and instance["DBInstanceClass"] == "db.t4g.small"
    assert instance["DBSubnetGroup"]["DBSubnetGroupName"] == aws["subnet_group"]
    group = aws["ec2"].describe_security_groups(GroupIds=[report["security_group"]])["SecurityGroups"][0]
    assert [(p["FromPort"], [g["GroupId"] for g in p["UserIdGroupPairs"]], p["IpRanges"])
            for p in group["IpPermissions"]] == [(5432, [aws["app_sg"]], [])]
    assert [g["VpcSecurityGroupId"] for g in instance["VpcSecurityGroups"]] == [report["security_group"]]
    secret = aws["sm"].get_secret_value(SecretId=report["master_secret_arn"])["SecretString"]
    assert json.loads(secret)["password"]
    assert report["host"] and report["port"] == 5432 and len(report["changed"]) == 3

    again = operator(aws).execute({})
    assert again["changed"] == [] and again["plan"]["action"] == "none"
    logs = "".join(capfd.readouterr())  # the task logger writes to the process's stdout/stderr
    assert "already matches the params: nothing was changed" in logs
    password = json.loads(secret)["password"]
    assert password not in logs and password not in json.dumps([report, again])


def test_changed_params_are_listed_and_applied_only_when_asked(aws):
    operator(aws).execute({})
    pending = operator(aws, instance_class="db.m5.large").execute({})
    assert pending["pending"] == [{"field": "instance_class", "current": "db.t4g.small", "wanted": "db.m5.large"}]
    rds = aws["rds"]
    assert rds.describe_db_instances(DBInstanceIdentifier=aws["identifier"])["DBInstances"][0]["DBInstanceClass"] \
        == "db.t4g.small"
    applied = operator(aws, instance_class="db.m5.large", apply_changes=True, apply_immediately=True).execute({})
    assert applied["changed"] == [f"modify {aws['identifier']}: instance_class db.t4g.small -> db.m5.large"]
    assert rds.describe_db_instances(DBInstanceIdentifier=aws["identifier"])["DBInstances"][0]["DBInstanceClass"] \
        == "db.m5.large"


def test_identifier_used_by_another_engine_changes_nothing(aws):
    aws["rds"].create_db_instance(DBInstanceIdentifier=aws["identifier"], DBInstanceClass="db.t4g.small",
                                  Engine="mysql", AllocatedStorage=20, MasterUsername="admin",
                                  ManageMasterUserPassword=True, StorageEncrypted=True)
    groups_before = aws["ec2"].describe_security_groups()["SecurityGroups"]
    with pytest.raises(AirflowFailException, match="already used by a mysql instance"):
        operator(aws).execute({})
    assert aws["ec2"].describe_security_groups()["SecurityGroups"] == groups_before


def test_bad_params_fail_before_any_call(aws):
    with pytest.raises(AirflowFailException, match="instance class 'm5.large'"):
        operator(aws, instance_class="m5.large").execute({})
    with pytest.raises(AirflowFailException, match="subnet group .* does not exist"):
        operator(aws, subnet_group="no-such-group").execute({})


def test_missing_credentials_is_a_clear_error(aws, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CHECKPOINTS", no_credentials_conn(aws["proxy"].url))
    with pytest.raises(AirflowFailException, match="has no credentials"):
        operator(aws).execute({})


def test_throttled_calls_are_retried(aws):
    aws["proxy"].throttle = {"CreateDBInstance": 2, "DescribeDBInstances": 1}
    report = operator(aws).execute({})
    assert report["status"] == "available"
    assert aws["proxy"].throttled.count("CreateDBInstance") == 2


def test_stuck_in_creating_fails_and_says_what_was_made(aws):
    aws["proxy"].status_override = "creating"
    with pytest.raises(AirflowFailException, match=r"still creating after .* made so far: \['created security group"):
        operator(aws).execute({})
    aws["proxy"].status_override = None
    assert operator(aws).execute({})["changed"] == [], "clearing the task converges without making anything twice"
