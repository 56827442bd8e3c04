"""Triggers (run by Airflow's triggerer) of checkpoint-ops' deferrable tasks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def _gate_inputs(prometheus_conn_id: str, target_conn_id: str):
    """(PrometheusAPI or None, the target's DSN), resolved through the connections where the trigger runs,
    so no credential is ever part of the trigger's serialised arguments."""
    from checkpoint_ops.hooks import CheckpointStoreHook, http_service
    from include.checkpoint_core.health.prometheus import PrometheusAPI

    service = http_service(prometheus_conn_id)
    api = PrometheusAPI(service[0].base_url, session=service[1]) if service else None
    return api, CheckpointStoreHook(target_conn_id).get_target().location


class CutoverSoakTrigger(BaseTrigger):
    """Checks the cutover's health gate every ``every_s`` until ``until`` (unix time); fires at once on a breach."""

    def __init__(self, *, prometheus_conn_id: str, target_conn_id: str, gate: dict[str, Any], until: float,
                 every_s: float, weight: int) -> None:
        super().__init__()
        self.prometheus_conn_id, self.target_conn_id = prometheus_conn_id, target_conn_id
        self.gate, self.until, self.every_s, self.weight = gate, until, every_s, weight

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("checkpoint_ops.triggers.CutoverSoakTrigger",
                {"prometheus_conn_id": self.prometheus_conn_id, "target_conn_id": self.target_conn_id,
                 "gate": self.gate, "until": self.until, "every_s": self.every_s, "weight": self.weight})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from include.checkpoint_core.cutover.gate import Gate, check

        gate = Gate(**self.gate)
        api, dsn = await sync_to_async(_gate_inputs)(self.prometheus_conn_id, self.target_conn_id)
        checks, streak, last, notes = 0, 0, None, set()
        while True:
            last = await asyncio.to_thread(check, api, dsn, gate, streak)
            checks, streak = checks + 1, last["unreachable_streak"]
            notes.update(last["missing"])
            if last["numbers"].get("database") != "ok":
                notes.add(f"PostgreSQL did not answer a check: {last['numbers']['database']}")
            self.log.info("soak at %s%%, check %d: %s %s", self.weight, checks, last["verdict"], last["numbers"])
            if last["verdict"] == "breach":
                yield TriggerEvent({"status": "breach", "reason": last["reason"], "checks": checks,
                                    "numbers": last["numbers"], "notes": sorted(notes)})
                return
            remaining = self.until - time.time()
            if remaining <= 0:
                yield TriggerEvent({"status": "ok", "checks": checks, "numbers": last["numbers"],
                                    "notes": sorted(notes)})
                return
            await asyncio.sleep(min(self.every_s, remaining))
