"""moto over HTTP for RDS, EC2 and Secrets Manager, and a proxy in front of it that injects faults."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.conftest import aws_conn_env, moto_s3  # noqa: F401 (the session's moto server)

THROTTLED = (b'<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>'
             b'</Error><RequestId>1</RequestId></ErrorResponse>')


class FaultProxy:
    """Forwards to moto; ``throttle[action] = n`` answers the next n calls of it with Throttling,
    ``status_override = "creating"`` makes every described instance report that status."""

    def __init__(self, upstream: str):
        self.throttle: dict[str, int] = {}
        self.throttled: list[str] = []
        self.status_override: str | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                action = next((p.split("=", 1)[1] for p in body.decode().split("&") if p.startswith("Action=")), "")
                if proxy.throttle.get(action):
                    proxy.throttle[action] -= 1
                    proxy.throttled.append(action)
                    return self._answer(400, THROTTLED, "text/xml")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                resp = requests.post(upstream + self.path, data=body, headers=headers, timeout=30)
                content = resp.content
                if proxy.status_override:
                    content = content.replace(b"<DBInstanceStatus>available</DBInstanceStatus>",
                                              f"<DBInstanceStatus>{proxy.status_override}</DBInstanceStatus>".encode())
                self._answer(resp.status_code, content, resp.headers.get("Content-Type", "text/xml"))

            def _answer(self, code, content, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def aws(moto_s3, monkeypatch):  # noqa: F811
    """A VPC with two private subnets, a DB subnet group and the app's security group on moto, and the
    ``aws_checkpoints`` connection to it through a fault proxy: a dict of what was made."""
    import boto3

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    kw = dict(endpoint_url=moto_s3, region_name="us-east-1", aws_access_key_id="testing",
              aws_secret_access_key="testing")
    ec2, rds = boto3.client("ec2", **kw), boto3.client("rds", **kw)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")
               ["Subnet"]["SubnetId"] for i, z in enumerate("ab")]
    suffix = uuid.uuid4().hex[:8]
    group = f"checkpoints-{suffix}"
    rds.create_db_subnet_group(DBSubnetGroupName=group, DBSubnetGroupDescription="app private", SubnetIds=subnets)
    app_sg = ec2.create_security_group(GroupName=f"app-{suffix}", Description="app", VpcId=vpc)["GroupId"]
    proxy = FaultProxy(moto_s3)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CHECKPOINTS", aws_conn_env(proxy.url))
    yield {"vpc": vpc, "subnet_group": group, "app_sg": app_sg, "identifier": f"cp-{suffix}", "proxy": proxy,
           "ec2": ec2, "rds": rds, "sm": boto3.client("secretsmanager", **kw), "endpoint": moto_s3}
    proxy.server.shutdown()


def no_credentials_conn(endpoint: str) -> str:
    return json.dumps({"conn_type": "aws", "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}})
