"""Where reports, staging files and backups go: an ObjectStoragePath root.

The root comes from the Airflow Variable ``checkpoint_artifacts_url`` (also settable as
``AIRFLOW_VAR_CHECKPOINT_ARTIFACTS_URL``): ``file:///...`` on one machine, or
``s3://checkpoint_artifacts@bucket/prefix`` to go through the ``checkpoint_artifacts`` aws
connection, which every Celery or Kubernetes worker can reach. Without it, artifacts go to
``$AIRFLOW_HOME/checkpoint-artifacts``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from airflow.sdk import ObjectStoragePath, Variable

from include.checkpoint_core.errors import CheckpointStoreError

ARTIFACTS_VARIABLE = "checkpoint_artifacts_url"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_artifacts_url() -> str:
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return f"file://{os.path.abspath(home)}/checkpoint-artifacts"


def artifacts_root() -> ObjectStoragePath:
    return ObjectStoragePath(Variable.get(ARTIFACTS_VARIABLE, default=None) or default_artifacts_url())


class ArtifactsUnavailable(CheckpointStoreError):
    hint = (
        "Create the bucket, or fix the Variable checkpoint_artifacts_url (s3://<conn id>@<bucket>/<prefix>) "
        "and the aws connection it names (credentials, region, endpoint_url for MinIO)."
    )


def checked_artifacts_root() -> ObjectStoragePath:
    """The artifacts root, with its S3 bucket checked first: a missing bucket or missing credentials
    is a configuration error to fix, not a failure to retry three times half way through a job."""
    root = artifacts_root()
    if root.protocol not in ("s3", "s3a"):
        return root
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    conn_id = root.conn_id or "aws_default"
    try:
        S3Hook(aws_conn_id=conn_id).get_conn().head_bucket(Bucket=root.bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            raise ArtifactsUnavailable(f"the artifacts bucket {root.bucket!r} does not exist.") from exc
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            raise ArtifactsUnavailable(
                f"connection {conn_id!r} may not use the artifacts bucket {root.bucket!r} ({code}): "
                "its credentials are missing, wrong or lack permission."
            ) from exc
        error = ArtifactsUnavailable(f"S3 answered {code} for the artifacts bucket {root.bucket!r}.",
                                     hint="The task retries; check S3's status if it keeps failing.")
        error.retryable = True
        raise error from exc
    except NoCredentialsError as exc:
        raise ArtifactsUnavailable(f"connection {conn_id!r} has no AWS credentials for the artifacts bucket.") from exc
    except BotoCoreError as exc:
        error = ArtifactsUnavailable(f"cannot reach S3 for the artifacts bucket {root.bucket!r}: {exc}.",
                                     hint="The task retries; check the endpoint and the network if it keeps failing.")
        error.retryable = True
        raise error from exc
    return root


def safe_key(text: str) -> str:
    """A path segment from a run id or similar: no slashes, colons or other surprises."""
    cleaned = _UNSAFE.sub("_", text).strip("._")
    return cleaned[:200] or "unnamed"


def write_report(dag_id: str, run_id: str, name: str, payload: dict[str, Any]) -> str:
    """Store a JSON report under ``reports/<dag_id>/<run_id>/<name>.json``; return its URL."""
    folder = artifacts_root() / "reports" / safe_key(dag_id) / safe_key(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{safe_key(name)}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    return str(path)
