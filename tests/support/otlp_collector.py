"""An OTLP/HTTP trace receiver for the tests (POST /v1/traces, protobuf, as the SDK's
otlp_proto_http exporter sends): it keeps every span it is sent, with its service's name."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                       ExportTraceServiceResponse)

from tests.support.background_http import BackgroundHttp


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str  # 32 hex digits, as in TRACEPARENT
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root
    attributes: dict[str, str]


class OtlpCollector(BackgroundHttp):
    def __init__(self) -> None:
        super().__init__(self._app, "otlp-collector")
        self.spans: list[ReceivedSpan] = []

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        return app

    async def _traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(ReceivedSpan(
                        resource.get("service.name", ""), span.name, span.trace_id.hex(), span.span_id.hex(),
                        span.parent_span_id.hex(), {kv.key: kv.value.string_value for kv in span.attributes}))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")
