"""Real-time decisions: a partner's approved ONNX model answers for one consenting customer at the moment
of a business event, from a warm sandbox, to the operator only (see ``dataspace.realtime.service``)."""

from dataspace.realtime.service import DecisionOutcome, DecisionService, decide, decisions_batched, list_decisions

__all__ = ["DecisionOutcome", "DecisionService", "decide", "decisions_batched", "list_decisions"]
