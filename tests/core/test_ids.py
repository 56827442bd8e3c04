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


def test_uuid6_floor_sorts_below_every_id_minted_at_or_after_its_moment():
    from datetime import datetime, timedelta, timezone

    from langgraph.checkpoint.base.id import uuid6

    from include.checkpoint_core.ids import uuid6_datetime, uuid6_floor

    now = datetime.now(timezone.utc)
    minted = str(uuid6())
    assert uuid6_floor(now - timedelta(seconds=1)) < minted < uuid6_floor(now + timedelta(seconds=60))
    moment = datetime(2026, 10, 1, 12, 0, tzinfo=timezone.utc)
    assert uuid6_floor(moment) < uuid6_floor(moment + timedelta(microseconds=1))
    # Its time bits are the moment's (the variant bits are zero: it is a bound, not an id).
    real = uuid6_floor(moment)[:19] + "8000-000000000000"
    assert uuid6_datetime(real) == moment
