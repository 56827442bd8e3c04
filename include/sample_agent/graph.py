"""A customer-support agent that behaves like a production LangGraph app, without an LLM.

Every node is deterministic (decisions come from the text of the request), yet the graph
exercises what real agents put into checkpoint storage:

- langchain-core messages, including AI messages with tool calls answered by a ``ToolNode``;
- a subgraph (``research``), so checkpoints exist under a non-empty ``checkpoint_ns``;
- parallel branches (``assess_sentiment`` and ``check_policy``) whose writes meet in a
  reducer channel, so a crash in one leaves the other's pending writes behind;
- a static ``interrupt_before=["execute_action"]`` and a dynamic ``interrupt()`` for
  actions that need a human's approval;
- cross-thread memory in a LangGraph store (when one is given): facts a user states (name,
  plan, open tickets, preferences) are kept under ``("users", <user_id>, "facts")`` and
  change the replies of that user's later threads (``memory.py``);
- metadata tags ``user_id`` and ``session_type`` (``step`` is added by LangGraph).
"""

from __future__ import annotations

import hashlib
import operator
import re
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from include.sample_agent import memory

INTERRUPT_BEFORE = ["execute_action"]
# Refunds above this need a human's explicit approval (the dynamic interrupt).
APPROVAL_THRESHOLD = 100.0


class SimulatedCrash(RuntimeError):
    """Raised by a node when the run's context asks for a crash (fault-injection)."""


@dataclass
class AgentContext:
    """Per-run context (not stored in checkpoints): fault injection and payload size."""

    crash_at: str | None = None
    payload_bytes: int = 300


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    user_id: str
    intent: str
    notes: str
    findings: Annotated[list[str], operator.add]
    action: dict[str, Any] | None
    approved: bool | None
    outcome: str
    turns: int


class ResearchState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    intent: str
    sources: list[str]
    notes: str


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def _filler(seed: str, size: int) -> str:
    """Deterministic prose of about ``size`` bytes: tool output and notes have real bulk."""
    words = ("order", "invoice", "shipment", "account", "policy", "warranty", "refund", "customer",
             "delivery", "tracking", "payment", "support", "return", "address", "status", "update")
    out, i, h = [], 0, _digest(seed)
    while sum(len(w) + 1 for w in out) < size:
        out.append(words[(h >> (i % 24)) % len(words) if i % 3 else (h + i) % len(words)])
        i += 1
    return " ".join(out)


def classify(text: str) -> tuple[str, float]:
    """Intent and amount from the request text: the agent's whole 'model'."""
    lowered = text.lower()
    amount = float(m.group(1)) if (m := re.search(r"\$(\d+(?:\.\d+)?)", text)) else 0.0
    if "refund" in lowered:
        return "refund", amount
    if "cancel" in lowered:
        return "cancel", amount
    return "question", amount


@tool
def lookup_account(user_id: str) -> dict:
    """Look up a customer's account."""
    h = _digest(user_id)
    return {"user_id": user_id, "tier": ("free", "pro", "enterprise")[h % 3], "open_orders": h % 5,
            "since": f"20{18 + h % 7}-0{1 + h % 9}-1{h % 10}"}


@tool
def search_kb(query: str) -> str:
    """Search the support knowledge base."""
    return f"KB results for '{query[:40]}': " + _filler(query, 240)


def intake(state: AgentState) -> dict:
    last = state["messages"][-1]
    intent, _ = classify(str(last.content))
    call_id = f"call_{_digest(str(last.id) + str(last.content)) % 10**8:08d}"
    ai = AIMessage(
        content="",
        tool_calls=[
            {"name": "lookup_account", "args": {"user_id": state.get("user_id", "anonymous")}, "id": call_id + "a"},
            {"name": "search_kb", "args": {"query": str(last.content)}, "id": call_id + "b"},
        ],
    )
    return {"messages": [ai], "intent": intent, "turns": state.get("turns", 0) + 1, "findings": []}


def retrieve(state: ResearchState, runtime: Runtime[AgentContext]) -> dict:
    size = runtime.context.payload_bytes if runtime.context else 300
    topic = state.get("intent", "question")
    return {"sources": [f"kb://{topic}/{i}" for i in range(3)], "notes": _filler(topic + str(len(state["messages"])), size)}


def summarize(state: ResearchState) -> dict:
    return {"notes": f"[{len(state.get('sources', []))} sources] " + state.get("notes", "")[:400]}


def build_research_subgraph():
    sub = StateGraph(ResearchState, context_schema=AgentContext)
    sub.add_node("retrieve", retrieve)
    sub.add_node("summarize", summarize)
    sub.add_edge(START, "retrieve")
    sub.add_edge("retrieve", "summarize")
    sub.add_edge("summarize", END)
    return sub.compile()


def _maybe_crash(node: str, runtime: Runtime[AgentContext]) -> None:
    if runtime.context is not None and runtime.context.crash_at == node:
        raise SimulatedCrash(f"injected crash in {node}")


def assess_sentiment(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    _maybe_crash("assess_sentiment", runtime)
    text = str(state["messages"][0].content) if state.get("messages") else ""
    mood = "frustrated" if any(w in text.lower() for w in ("again", "still", "refund")) else "neutral"
    return {"findings": [f"sentiment={mood}"]}


def check_policy(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    _maybe_crash("check_policy", runtime)
    return {"findings": [f"policy={'refundable' if state.get('intent') == 'refund' else 'n/a'}"]}


def plan_action(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    _maybe_crash("plan_action", runtime)
    human = [m for m in state["messages"] if isinstance(m, HumanMessage)]
    intent, amount = classify(str(human[-1].content)) if human else ("question", 0.0)
    if intent == "question":
        return {"action": None, "approved": None}
    return {"action": {"type": intent, "amount": amount, "user_id": state.get("user_id")}, "approved": None}


def route_after_plan(state: AgentState) -> str:
    return "execute_action" if state.get("action") else "respond"


def execute_action(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    action = dict(state["action"] or {})
    approved = True
    if action.get("type") == "refund" and action.get("amount", 0) > APPROVAL_THRESHOLD:
        answer = interrupt({"question": f"Approve a refund of ${action['amount']:.2f}?", "action": action})
        approved = str(answer).lower() in ("approve", "approved", "yes", "true")
    _maybe_crash("execute_action", runtime)
    outcome = f"{action.get('type')} {'done' if approved else 'declined'}"
    return {"approved": approved, "outcome": outcome}


def respond(state: AgentState) -> dict:
    outcome = state.get("outcome") or "answered"
    if state.get("action") is None:
        outcome = "answered"
    try:
        store = get_store()
    except RuntimeError:
        store = None
    known = ""
    if store is not None and state.get("user_id"):
        human = [m for m in state["messages"] if isinstance(m, HumanMessage)]
        text = str(human[-1].content) if human else ""
        # Facts go to the Store, not to state: a new thread of this user sees them, and the
        # checkpoints stay small however much the agent learns.
        memory.remember(store, state["user_id"], text)
        known = memory.greeting(memory.recall(store, state["user_id"], query=text))
        store.put(("memories", state["user_id"]), f"turn-{state.get('turns', 0)}",
                  {"intent": state.get("intent"), "outcome": outcome})
    reply = AIMessage(content=f"Done: {outcome}. " + (f"{known}. " if known else "")
                      + f"Notes: {state.get('notes', '')[:160]}")
    return {"messages": [reply], "outcome": outcome}


def build_agent_graph(checkpointer=None, store=None, *, interrupt_before: list[str] | None = None):
    """Compile the support agent. ``interrupt_before`` defaults to ``["execute_action"]``."""
    builder = StateGraph(AgentState, context_schema=AgentContext)
    builder.add_node("intake", intake)
    builder.add_node("tools", ToolNode([lookup_account, search_kb]))
    builder.add_node("research", build_research_subgraph())
    builder.add_node("assess_sentiment", assess_sentiment)
    builder.add_node("check_policy", check_policy)
    builder.add_node("plan_action", plan_action)
    builder.add_node("execute_action", execute_action)
    builder.add_node("respond", respond)
    builder.add_edge(START, "intake")
    builder.add_edge("intake", "tools")
    builder.add_edge("tools", "research")
    builder.add_edge("research", "assess_sentiment")
    builder.add_edge("research", "check_policy")
    builder.add_edge(["assess_sentiment", "check_policy"], "plan_action")
    builder.add_conditional_edges("plan_action", route_after_plan, ["execute_action", "respond"])
    builder.add_edge("execute_action", "respond")
    builder.add_edge("respond", END)
    return builder.compile(
        checkpointer=checkpointer,
        store=store,
        interrupt_before=INTERRUPT_BEFORE if interrupt_before is None else interrupt_before,
    )


def thread_config(thread_id: str, user_id: str, session_type: str) -> dict:
    """The run config an app would pass: thread id plus the metadata tags we filter on."""
    return {
        "configurable": {"thread_id": thread_id},
        "metadata": {"user_id": user_id, "session_type": session_type},
    }


def start_turn(graph, config: dict, user_id: str, text: str, context: AgentContext | None = None) -> dict:
    return graph.invoke(
        {"messages": [HumanMessage(content=text)], "user_id": user_id}, config, context=context or AgentContext()
    )
