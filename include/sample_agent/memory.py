"""Cross-thread memory of the sample agent: facts about a user kept in the LangGraph Store.

A fact outlives the conversation it was said in, so it does not belong in a thread's
checkpoints (which every turn reloads and which retention prunes): it goes to the Store under
``("users", <user_id>, "facts")``, keyed by what it is about, and any later thread of the same
user reads it back. Extraction is rule-based (no LLM), so answers are deterministic.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

FACTS = "facts"
EMBED_DIMS = 64
# What a semantic index embeds: the fact's text (the sentence it came from).
INDEX_FIELDS = ["text"]

_NAME = re.compile(r"\bmy name is ([A-Z][\w'-]*)")
_PLAN = re.compile(r"\b(?:i'?m|i am) on the (\w+) plan", re.I)
_OPEN_TICKET = re.compile(r"\bopened ticket #(\d+)", re.I)
_CLOSED_TICKET = re.compile(r"\bticket #(\d+) is (?:closed|resolved|solved)", re.I)
_PREFER = re.compile(r"\bi prefer ([^.!?]+)", re.I)


def facts_namespace(user_id: str) -> tuple[str, ...]:
    return ("users", user_id, FACTS)


def extract_facts(text: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The facts a message states (key -> value) and the keys it retracts (a ticket closed)."""
    found: dict[str, dict[str, Any]] = {}
    if m := _NAME.search(text):
        found["name"] = {"kind": "name", "value": m.group(1), "text": m.group(0)}
    if m := _PLAN.search(text):
        found["plan"] = {"kind": "plan", "value": m.group(1).lower(), "text": m.group(0)}
    for m in _OPEN_TICKET.finditer(text):
        found[f"ticket-{m.group(1)}"] = {"kind": "ticket", "value": m.group(1), "status": "open", "text": m.group(0)}
    for m in _PREFER.finditer(text):
        value = m.group(1).strip()
        topic = value.split()[0].lower()
        found[f"preference-{hashlib.sha256(value.lower().encode()).hexdigest()[:8]}"] = {
            "kind": "preference", "value": value, "topic": topic, "text": f"I prefer {value}"}
    closed = [f"ticket-{m.group(1)}" for m in _CLOSED_TICKET.finditer(text)]
    return found, closed


def remember(store, user_id: str, text: str) -> int:
    """Write what ``text`` says about the user into the Store; return how many items changed."""
    facts, closed = extract_facts(text)
    ns = facts_namespace(user_id)
    for key, value in facts.items():
        store.put(ns, key, value)
    for key in closed:
        store.delete(ns, key)
    return len(facts) + len(closed)


def recall(store, user_id: str, query: str | None = None) -> dict[str, Any]:
    """What the agent knows about a user, from any earlier thread: name, plan, open tickets and
    the preference closest to ``query`` (by the Store's vector index when it has one)."""
    ns = facts_namespace(user_id)
    name, plan = store.get(ns, "name"), store.get(ns, "plan")
    tickets = store.search(ns, filter={"kind": "ticket", "status": "open"}, limit=100)
    semantic = query if getattr(store, "index_config", None) else None
    prefs = store.search(ns, filter={"kind": "preference"}, query=semantic, limit=1)
    return {
        "name": name.value["value"] if name else None,
        "plan": plan.value["value"] if plan else None,
        "open_tickets": sorted((t.value["value"] for t in tickets), key=int),
        "preference": prefs[0].value["value"] if prefs else None,
    }


def greeting(known: dict[str, Any]) -> str:
    """The part of a reply that only cross-thread memory can produce ('' when nothing is known)."""
    parts = []
    if known.get("name"):
        parts.append(f"Hi {known['name']}")
    if known.get("plan"):
        parts.append(f"{known['plan']} plan")
    if known.get("open_tickets"):
        parts.append("open tickets: " + ", ".join(f"#{t}" for t in known["open_tickets"]))
    if known.get("preference"):
        parts.append(f"you prefer {known['preference']}")
    return "; ".join(parts)


def hash_embed(texts: list[str]) -> list[list[float]]:
    """A deterministic bag-of-words embedding (no model, no network): texts sharing words are
    close, so a Store's semantic search ranks like a real one would on these facts."""
    out = []
    for text in texts:
        vec = [0.0] * EMBED_DIMS
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
            vec[h % EMBED_DIMS] += 1.0 if (h >> 32) & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        out.append([v / norm for v in vec])
    return out


def index_config(dims: int = EMBED_DIMS) -> dict[str, Any]:
    """A Store ``index`` configuration using ``hash_embed``: what a test or demo passes to
    ``SqliteStore(conn, index=...)`` to get semantic search without an embedding service."""
    # IndexConfig names the field list ``fields``; SqliteStore reads ``text_fields``.
    return {"dims": dims, "embed": hash_embed, "fields": list(INDEX_FIELDS), "text_fields": list(INDEX_FIELDS)}
