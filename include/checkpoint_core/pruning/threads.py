"""How a prune sees one thread, whatever the backend.

Both backends read the same facts from storage — each namespace's head, the root head's
pending channels and the special writes on the heads — and ``decide`` turns them into one
action. Keeping the decision here means SQLite and PostgreSQL cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A LangGraph checkpoint holds a value in a trigger channel only while the node behind it
# still has to run: ``branch:to:NODE`` (LangGraph >= 0.3), ``branch:...``/``start:NODE``
# (older releases) and ``__start__`` (input not yet processed). A finished run leaves none.
PENDING_PREFIXES = ("branch:", "start:")
INTERRUPT = "__interrupt__"
ERROR = "__error__"
TASKS = "__pregel_tasks"


def pending_channels(channels_with_values) -> list[str]:
    return sorted(c for c in channels_with_values if c == "__start__" or c.startswith(PENDING_PREFIXES))


def is_paused(pending: list[str], head_writes: set[str]) -> bool:
    """Waiting on a human: a dynamic ``interrupt()`` (an ``__interrupt__`` write on a head), or
    nodes still due with no error behind them (``interrupt_before``/``after``, or a worker that
    died mid-step — both resume with ``invoke(None)``, so both are kept)."""
    return INTERRUPT in head_writes or (bool(pending) and ERROR not in head_writes)


@dataclass
class Heads:
    """A thread's namespaces: the head of each, and what pruning must keep besides it."""

    head: dict[str, str] = field(default_factory=dict)  # ns -> latest checkpoint id
    sends_parent: dict[str, str] = field(default_factory=dict)  # ns -> parent a pre-v4 head reads sends from
    root: dict[str, str] = field(default_factory=dict)  # call ns -> root checkpoint id it started from

    @property
    def newest(self) -> str:
        return max(self.head.values())

    def kept(self, ns: str) -> set[str]:
        return {i for i in (self.head.get(ns), self.sends_parent.get(ns)) if i}


def decide(heads: Heads, cutoff_id: str, *, strategy: str, paused: bool, delta: bool, protect: bool) -> str:
    """One of ``protect``, ``skip_delta``, ``delete`` (drop the thread) or ``trim``.

    A thread idle for longer than the retention is dropped whole under ``delete``. Every
    other thread is trimmed: checkpoints older than the cutoff go, except each namespace's
    head (and what a pre-v4 head needs), so it still loads and resumes.
    """
    if protect and paused:
        return "protect"
    idle = heads.newest < cutoff_id
    if strategy == "delete" and idle:
        return "delete"
    if delta:
        return "skip_delta"  # LangGraph rebuilds a DeltaChannel's value from older checkpoints
    return "trim"


def doomed_calls(heads: Heads, doomed_root: set[str]) -> set[str]:
    """Subgraph-call namespaces (``node:task_id``) that go with the root checkpoint they started
    from, as ``PostgresSaver.prune`` does; a ``checkpointer=True`` subgraph's namespace has no
    ``:`` and lives on."""
    return {ns for ns, root in heads.root.items() if ":" in ns and root in doomed_root}
