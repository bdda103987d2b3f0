"""What the operator's monitoring sees: Prometheus metrics (``metrics``), OpenTelemetry traces (``tracing``),
and the liveness and readiness checks behind ``/livez`` and ``/readyz`` (``health``)."""
