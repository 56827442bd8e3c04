"""checkpoint_provision with dag.test() on moto over HTTP: the report, and no secret value anywhere."""

from __future__ import annotations

import json

from tests.airflow.conftest import dagbag, fresh_dag, xcom  # noqa: F401 (fixtures)


def test_provision_dag_records_the_connection_without_the_password(aws, fresh_dag, capfd):  # noqa: F811
    dag = fresh_dag("checkpoint_provision")
    dr = dag.test(run_conf={"identifier": aws["identifier"], "subnet_group": aws["subnet_group"],
                            "allowed_security_group": aws["app_sg"], "aws_conn_id": "aws_checkpoints",
                            "dry_run": False, "timeout_minutes": 1})
    assert dr.state == "success"
    report = xcom(dr, "report")
    assert report["connection"]["port"] == 5432 and report["connection"]["host"]
    assert "password" not in report["connection"]
    password = json.loads(aws["sm"].get_secret_value(SecretId=report["master_secret_arn"])["SecretString"])["password"]
    logs = "".join(capfd.readouterr())
    assert "Record the checkpoints_postgres connection" in logs
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(RenderedTaskInstanceFields).filter_by(dag_id=dr.dag_id, run_id=dr.run_id).all()
        rendered = json.dumps([r.rendered_fields for r in rows], default=str)
    assert aws["identifier"] in rendered
    assert password not in logs and password not in json.dumps(report) and password not in rendered
