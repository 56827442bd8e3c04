"""Cross-thread memory witnesses: what one thread stores about a user, a later thread answers with."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import time_machine

from include.sample_agent.graph import build_agent_graph, start_turn, thread_config
from include.sample_agent.memory import facts_namespace

USER = "o'brien_100% ü"  # quote, LIKE metacharacters, a space and non-ASCII: all legal namespace labels
TELL = ("Hello, my name is Alice and I'm on the Pro plan. I opened ticket #4521. I opened ticket #77. "
        "I prefer email over phone calls.")
ASK = "Where is my order #12?"
KNOWN = "Hi Alice; pro plan; open tickets: #77, #4521; you prefer email over phone calls."
TTL_NS = ("sessions", USER, "scratch")


def reply(saver, store, user: str, text: str, thread_id: str | None = None) -> str:
    graph = build_agent_graph(saver, store)
    thread_id = thread_id or f"mem-{uuid.uuid4().hex[:8]}"
    return start_turn(graph, thread_config(thread_id, user, "support"), user, text)["messages"][-1].content


def teach(saver, store, user: str = USER, thread_id: str = "thread-A") -> None:
    """Thread A: the user states facts. Its own reply already uses them."""
    assert KNOWN in reply(saver, store, user, TELL, thread_id)


def assert_recalls(saver, store, user: str = USER) -> None:
    """A brand-new thread of the same user answers with what thread A stored; another user does not."""
    answer = reply(saver, store, user, ASK)
    assert KNOWN in answer, answer
    stranger = reply(saver, store, "someone-else", ASK)
    assert "Alice" not in stranger and stranger.startswith("Done: answered. Notes:")
    assert {i.key for i in store.search(facts_namespace(user), limit=50)} == {
        "name", "plan", "ticket-4521", "ticket-77", "preference-6406b670"}


def put_ttl_items(store) -> None:
    """One item whose TTL ran out a day ago, one with a week to go, one without TTL."""
    with time_machine.travel(datetime.now(timezone.utc) - timedelta(days=2), tick=True):
        store.put(TTL_NS, "expired", {"note": "gone"}, ttl=60)
    store.put(TTL_NS, "live", {"note": "stays"}, ttl=7 * 24 * 60)
    store.put(TTL_NS, "forever", {"note": "no ttl"})


def age_expired_item(target) -> None:
    """PostgresStore computes expires_at on the server (now() + ttl), so a clock moved in Python
    cannot age it: move the expiry of the item meant to have run out instead."""
    if target.kind == "postgres":
        import psycopg

        with psycopg.connect(target.location) as conn:
            conn.execute("UPDATE store SET expires_at = now() - interval '1 day' WHERE prefix = %s AND key = 'expired'",
                         (".".join(TTL_NS),))


def ttl_rows(target) -> dict[str, tuple]:
    """key -> (expires_at as aware UTC to the second, ttl_minutes) of the TTL items, read with SQL."""
    prefix = ".".join(TTL_NS)
    sql = "SELECT key, expires_at, ttl_minutes FROM store WHERE prefix = {p}"
    if target.kind == "postgres":
        import psycopg

        with psycopg.connect(target.location) as conn:
            rows = conn.execute(sql.format(p="%s"), (prefix,)).fetchall()
    else:
        from include.checkpoint_core.sqlite_store import open_sqlite_readonly

        with open_sqlite_readonly(target.location) as conn:
            rows = conn.execute(sql.format(p="?"), (prefix,)).fetchall()
    out = {}
    for key, expires, ttl in rows:
        if isinstance(expires, str):
            expires = datetime.fromisoformat(expires)
        if expires is not None:
            expires = (expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
            expires = expires.replace(microsecond=0)
        out[key] = (expires, None if ttl is None else float(ttl))
    return out
