"""Threads of real graphs moved blue -> green -> blue: the app cannot tell, and nothing is lost."""

from __future__ import annotations

from collections import Counter

import pytest
from langgraph.types import Command

from include.checkpoint_core.cutover import jobs, routes
from tests.tiering.fidelity_graphs import build_nested, build_review, crashed_fanout, build_fanout, new_tid, shape, views


def _names(state):
    return [t.name for t in state.tasks]


def test_threads_move_to_green_and_back_with_everything_written_in_green(routing, prepared, stores):
    pg, blue = prepared
    blue_saver, green_saver = stores
    review = build_review(routing)
    paused = new_tid("review")
    review.invoke({"topic": "cutover"}, {"configurable": {"thread_id": paused}})
    nested_tid = new_tid("nested")
    nested = build_nested(routing)
    nested.invoke({"log": []}, {"configurable": {"thread_id": nested_tid}})
    fan = crashed_fanout(routing)
    before = {t: shape(g, {"configurable": {"thread_id": t}}) for t, g in
              ((paused, review), (nested_tid, nested))}
    assert routing.route(paused).store == "blue"

    out = jobs.ramp(pg, blue, 100)
    assert out["moved"] == 3 and not out["refused"]
    assert {routing.route(t, fresh=True).store for t in (paused, nested_tid, fan)} == {"green"}
    for t, g in ((paused, review), (nested_tid, nested)):
        assert shape(g, {"configurable": {"thread_id": t}}) == before[t]
    # blue refuses the moved threads, whoever writes
    cfg = {"configurable": {"thread_id": paused}}
    with pytest.raises(Exception) as refused:
        blue_saver.put_writes({"configurable": {"thread_id": paused, "checkpoint_ns": "",
                                                "checkpoint_id": "x"}}, [("a", 1)], "t")
    assert routes.is_refusal(refused.value)

    # the app goes on in green: answer once, resume the crashed fan-out
    review.invoke(Command(resume="Green title"), cfg)
    calls = Counter()
    build_fanout(routing, calls, set()).invoke(None, {"configurable": {"thread_id": fan}})
    assert calls == Counter({2: 1}), "the finished siblings' writes came along"
    green_era = {t: shape(g, {"configurable": {"thread_id": t}}) for t, g in ((paused, review), (nested_tid, nested))}

    back = jobs.rollback(pg, blue)
    assert back["moved"] == 3 and not back["refused"]
    assert {routing.route(t, fresh=True).store for t in (paused, nested_tid, fan)} == {"blue"}
    for t, g in ((paused, review), (nested_tid, nested)):
        assert shape(g, {"configurable": {"thread_id": t}}) == green_era[t]
    plain = build_review(blue_saver)
    assert shape(plain, cfg) == green_era[paused]
    review.invoke(Command(resume="yes"), cfg)
    assert review.get_state(cfg).values["log"][-1].startswith("published")
    nested.invoke(Command(resume="ok"), {"configurable": {"thread_id": nested_tid}})
    assert nested.get_state({"configurable": {"thread_id": nested_tid}}).next == ()
