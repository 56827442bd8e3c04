from datetime import datetime, timedelta, timezone

import time_machine
from langgraph.checkpoint.base import id as lg_ids

from include.checkpoint_core.ids import uuid6_datetime


def test_uuid6_time_round_trips_through_langgraph_ids():
    moment = datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=timezone.utc)
    lg_ids._last_v6_timestamp = None
    with time_machine.travel(moment, tick=False):
        cid = str(lg_ids.uuid6())
    assert uuid6_datetime(cid) - moment < timedelta(microseconds=1)
    assert uuid6_datetime(cid) >= moment


def test_other_ids_have_no_time():
    assert uuid6_datetime("0f3c3a8e-2c1b-4c5e-9a51-1f4f8c2f9a10") is None  # uuid4
    assert uuid6_datetime("2024-01-01T00:00:00") is None
