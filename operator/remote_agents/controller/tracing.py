"""OpenTelemetry traces, off unless the standard OTEL_* environment asks for them.

`configure()` (called once when the operator starts) installs the SDK's tracer provider when
OTEL_TRACES_EXPORTER names an exporter or an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and OTEL_SDK_DISABLED is not true. The SDK reads the rest of
the standard variables itself (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_*
headers, timeouts, OTEL_BSP_*, OTEL_TRACES_SAMPLER). Exporters: `otlp` (http/protobuf, or gRPC with
OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL=grpc), `console`, or any name registered as an
`opentelemetry_traces_exporter` entry point. The SDK is the optional extra `otel`.

Otherwise the API's no-op tracer is left in place: a span is a shared non-recording object, so
tracing costs next to nothing, and no TRACEPARENT is handed to tasks."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from importlib.metadata import entry_points

from opentelemetry import propagate, trace

log = logging.getLogger(__name__)
tracer = trace.get_tracer("remote_agents")
OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def wanted(environ: Mapping[str, str]) -> list[str]:
    """The exporters the environment asks for (empty: tracing stays off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [name.strip() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if not names:
        return ["otlp"] if any(environ.get(variable) for variable in OTLP_ENDPOINTS) else []
    return [] if names == ["none"] else [name for name in names if name != "none"]


def configure(environ: Mapping[str, str] = os.environ) -> bool:
    """Install the SDK's provider if the environment asks for traces; True when it did."""
    names = wanted(environ)
    if not names:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise SystemExit("OTEL_* asks for traces, but the OpenTelemetry SDK is missing: "
                         "pip install 'remote-agents[otel]'") from None
    provider = TracerProvider(resource=Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME")
                                                        or "remote-agents-operator"}))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
    trace.set_tracer_provider(provider)
    log.info("OpenTelemetry traces exported with %s", ", ".join(names))
    return True


def _exporter(name: str, environ: Mapping[str, str]):
    if name == "otlp":
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        name = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise SystemExit(f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed")
    return next(iter(found)).load()()


def traceparent(span: trace.Span) -> dict[str, str]:
    """TRACEPARENT (and TRACESTATE) for a process that continues `span`'s trace; empty when off."""
    if not span.get_span_context().is_valid:
        return {}  # off: the no-op span has no trace to continue
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return {key.upper(): value for key, value in carrier.items() if key in ("traceparent", "tracestate")}
