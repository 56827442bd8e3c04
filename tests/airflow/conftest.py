"""Helpers to run DAGs for real with ``dag.test()`` against the session's metadata DB."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    """The project's DAGs, parsed and serialised the way the dag-processor does."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(str(ROOT / "dags"))
    sync_bag_to_db(bag, "dags-folder", None)
    return bag


def register(dag) -> None:
    """Serialise a DAG built inside a test so ``dag.test()`` can run it."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def task_instances(dag_run) -> dict[tuple[str, int], object]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        session.expunge_all()
    return {(ti.task_id, ti.map_index): ti for ti in tis}


def xcom(dag_run, task_id: str, map_index: int = -1):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, map_index=map_index, key="return_value")
            .one_or_none()
        )
        return None if row is None else row.value


@pytest.fixture
def fresh_dag(dagbag):
    """A newly parsed DAG object per test: dag.test(run_conf=...) writes the conf into the
    DAG's params, so reusing one object would leak params from one test into the next."""
    from airflow.dag_processing.dagbag import DagBag

    def load(dag_id: str):
        fileloc = dagbag.get_dag(dag_id).fileloc
        return DagBag(fileloc).get_dag(dag_id)

    return load
