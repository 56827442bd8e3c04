"""The smallest graph shaped like an agent's turn, for load on a checkpointer (cutover tests and benchmarks).

``inc -> note``: each turn is a ``put`` per step, two ``put_writes`` and a read, with a bytes channel and a
list that grows by one entry per turn; ``n`` counts the thread's turns, so a lost write shows.
"""

from __future__ import annotations

import operator
import os
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph


class Counter(TypedDict, total=False):
    n: int
    log: Annotated[list[str], operator.add]
    blob: bytes


def build_counter(checkpointer, proc: str = "app"):
    b = StateGraph(Counter)
    b.add_node("inc", lambda s: {"n": s.get("n", 0) + 1, "blob": os.urandom(64)})
    b.add_node("note", lambda s: {"log": [f"{proc}:{s['n']}"]})
    b.add_edge(START, "inc")
    b.add_edge("inc", "note")
    b.add_edge("note", END)
    return b.compile(checkpointer=checkpointer)
