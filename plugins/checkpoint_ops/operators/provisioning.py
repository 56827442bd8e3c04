"""Provision the checkpoint PostgreSQL on RDS through the amazon provider's hooks.

The plan comes from ``include.checkpoint_core.provisioning.plan``; this operator only describes
what exists, applies the plan and waits. boto3 is imported inside ``execute`` (through the
provider's hooks), so DAG files that use it stay cheap to parse.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from checkpoint_ops.operators.base import as_bool


class RdsCheckpointProvisionOperator(BaseOperator):
    """Create (or check) an encrypted, private RDS PostgreSQL instance whose 5432 is open only to the app.

    Re-running with the same params changes nothing and says so; changed params are listed and
    applied only with ``apply_changes``. The master password is generated and kept by RDS in Secrets
    Manager (``ManageMasterUserPassword``): only the secret's ARN is reported, never its value.
    """

    template_fields: Sequence[str] = (
        "aws_conn_id", "identifier", "instance_class", "engine_version", "storage_gb", "backup_retention_days",
        "multi_az", "subnet_group", "allowed_security_group", "allowed_cidr", "deletion_protection", "dry_run",
        "apply_changes", "apply_immediately", "timeout_minutes",
    )
    ui_color = "#fbeee8"

    def __init__(self, *, aws_conn_id: str = "aws_default", identifier: str, subnet_group: str,
                 instance_class: str = "db.t4g.small", engine_version: str | None = None, storage_gb: int = 20,
                 backup_retention_days: int = 7, multi_az: bool = False, allowed_security_group: str | None = None,
                 allowed_cidr: str | None = None, deletion_protection: bool = True, dry_run: bool = True,
                 apply_changes: bool = False, apply_immediately: bool = False, timeout_minutes: float = 60,
                 poll_seconds: float = 30, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id, self.identifier, self.subnet_group = aws_conn_id, identifier, subnet_group
        self.instance_class, self.engine_version, self.storage_gb = instance_class, engine_version, storage_gb
        self.backup_retention_days, self.multi_az = backup_retention_days, multi_az
        self.allowed_security_group, self.allowed_cidr = allowed_security_group, allowed_cidr
        self.deletion_protection, self.dry_run, self.apply_changes = deletion_protection, dry_run, apply_changes
        self.apply_immediately, self.timeout_minutes, self.poll_seconds = apply_immediately, timeout_minutes, poll_seconds

    def spec(self):
        from include.checkpoint_core.provisioning.plan import InstanceSpec

        return InstanceSpec(
            identifier=self.identifier, subnet_group=self.subnet_group, instance_class=self.instance_class,
            engine_version=self.engine_version or None, storage_gb=int(self.storage_gb),
            backup_retention_days=int(self.backup_retention_days), multi_az=as_bool(self.multi_az),
            deletion_protection=as_bool(self.deletion_protection),
            allowed_security_group=self.allowed_security_group or None, allowed_cidr=self.allowed_cidr or None,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from botocore.exceptions import ClientError, NoCredentialsError

        from include.checkpoint_core.provisioning.plan import ProvisioningError

        try:
            return self._provision()
        except ProvisioningError as exc:
            raise AirflowFailException(str(exc)) from None
        except NoCredentialsError:
            raise AirflowFailException(
                f"the aws connection {self.aws_conn_id!r} has no credentials: give it a role (web identity / instance "
                "profile) or an access key; nothing was changed.") from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "InvalidClientTokenId",
                        "InvalidParameterValue", "InvalidParameterCombination", "DBSubnetGroupNotFoundFault"):
                raise AirflowFailException(f"AWS refused {exc.operation_name}: {code}: "
                                           f"{exc.response['Error'].get('Message')}") from None
            raise  # throttling beyond botocore's own retries, a service hiccup: the task retries

    def _provision(self) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
        from airflow.providers.amazon.aws.hooks.rds import RdsHook

        from include.checkpoint_core.provisioning.plan import (
            create_arguments, describe_plan, modify_arguments, plan_instance,
        )

        spec = self.spec()
        rds = RdsHook(aws_conn_id=self.aws_conn_id).conn
        ec2 = EC2Hook(aws_conn_id=self.aws_conn_id, api_type="client_type").conn
        existing = self._describe(rds)
        plan = plan_instance(spec, existing)
        summary = describe_plan(spec, plan)
        self.log.info("Plan: %s", summary)
        report: dict[str, Any] = {"identifier": spec.identifier, "plan": plan, "summary": summary, "changed": []}
        dry_run = as_bool(self.dry_run)
        vpc_id = self._subnet_group_vpc(rds, spec.subnet_group)
        group_id = self._security_group(ec2, spec, vpc_id, report, dry_run)
        if dry_run:
            report["dry_run"] = True
            self.log.info("dry_run: nothing was created or modified.")
            return report
        if plan["action"] == "create":
            rds.create_db_instance(**create_arguments(spec, group_id))
            report["changed"].append(f"created instance {spec.identifier}")
        elif plan["action"] == "modify":
            if not as_bool(self.apply_changes):
                report["pending"] = plan["changes"]
                self.log.warning("The params differ from %s (%s); nothing was modified. Trigger again with "
                                 "apply_changes to apply them.", spec.identifier, summary)
            else:
                rds.modify_db_instance(**modify_arguments(spec, plan, apply_immediately=as_bool(self.apply_immediately)))
                report["changed"].append(summary)
        instance = self._wait_available(rds, spec.identifier, report)
        endpoint = instance.get("Endpoint") or {}
        report.update({
            "status": instance["DBInstanceStatus"], "host": endpoint.get("Address"), "port": endpoint.get("Port"),
            "dbname": instance.get("DBName"), "login": instance.get("MasterUsername"),
            "master_secret_arn": (instance.get("MasterUserSecret") or {}).get("SecretArn"),
            "security_group": group_id,
        })
        if not report["changed"]:
            self.log.info("%s already matches the params: nothing was changed.", spec.identifier)
        return report

    def _describe(self, rds) -> dict[str, Any] | None:
        try:
            return rds.describe_db_instances(DBInstanceIdentifier=self.identifier)["DBInstances"][0]
        except rds.exceptions.DBInstanceNotFoundFault:
            return None

    def _subnet_group_vpc(self, rds, name: str) -> str:
        from include.checkpoint_core.provisioning.plan import ProvisioningError

        try:
            return rds.describe_db_subnet_groups(DBSubnetGroupName=name)["DBSubnetGroups"][0]["VpcId"]
        except rds.exceptions.DBSubnetGroupNotFoundFault:
            raise ProvisioningError(f"DB subnet group {name!r} does not exist: create it over the app's private "
                                    "subnets (two AZs) or give an existing one; nothing was changed.") from None

    def _security_group(self, ec2, spec, vpc_id: str, report: dict, dry_run: bool) -> str | None:
        """The instance's own group, in the subnet group's VPC, admitting 5432 from the app only."""
        name = f"{spec.identifier}-checkpoints-db"
        found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]},
                                                      {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
        rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432}
        if spec.allowed_security_group:
            rule["UserIdGroupPairs"] = [{"GroupId": spec.allowed_security_group}]
        else:
            rule["IpRanges"] = [{"CidrIp": spec.allowed_cidr}]
        if found:
            group = found[0]
            present = any(p.get("FromPort") == 5432 and p.get("ToPort") == 5432 and (
                any(g["GroupId"] == spec.allowed_security_group for g in p.get("UserIdGroupPairs", []))
                or any(r["CidrIp"] == spec.allowed_cidr for r in p.get("IpRanges", [])))
                for p in group.get("IpPermissions", []))
            if present:
                return group["GroupId"]
            group_id = group["GroupId"]
        elif dry_run:
            report["plan"]["changes"].append({"field": "security_group", "current": None, "wanted": name})
            return None
        else:
            group_id = ec2.create_security_group(
                GroupName=name, VpcId=vpc_id, Description=f"PostgreSQL 5432 of {spec.identifier} from the app only",
            )["GroupId"]
            report["changed"].append(f"created security group {name} ({group_id})")
        if dry_run:
            report["plan"]["changes"].append({"field": "security_group_rule", "current": None, "wanted": rule})
            return group_id
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[rule])
        report["changed"].append(f"allowed 5432 on {group_id} from {spec.allowed_security_group or spec.allowed_cidr}")
        return group_id

    def _wait_available(self, rds, identifier: str, report: dict) -> dict[str, Any]:
        deadline = time.monotonic() + float(self.timeout_minutes) * 60
        while True:
            instance = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
            status = instance["DBInstanceStatus"]
            if status == "available":
                return instance
            if status in ("failed", "incompatible-parameters", "incompatible-network", "storage-full"):
                raise AirflowFailException(f"{identifier} is {status}; made so far: {report['changed'] or 'nothing'}. "
                                           "Fix it in the RDS console, then clear this task.")
            if time.monotonic() >= deadline:
                raise AirflowFailException(
                    f"{identifier} is still {status} after {self.timeout_minutes} min; made so far: "
                    f"{report['changed'] or 'nothing'}. It is left as it is: clear this task to wait again.")
            self.log.info("%s is %s; waiting for available", identifier, status)
            time.sleep(float(self.poll_seconds))
