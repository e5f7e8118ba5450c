"""A tiny OTLP/gRPC trace receiver on loopback, for tests: the gRPC twin of
tests/support/otlp_receiver.py (https://opentelemetry.io/docs/specs/otlp/#otlpgrpc).

A grpcio server with opentelemetry-proto's generated `TraceService` on 127.0.0.1: each
`Export` call's spans are kept (decoded as the HTTP receiver decodes them) and an empty
`ExportTraceServiceResponse` answered.

    with OtlpGrpcReceiver() as receiver:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint   # http://127.0.0.1:PORT
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
        ...
        spans = receiver.wait_for(lambda spans: len(spans) >= 3)
"""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass
from typing import Any

from tests.support.otlp_receiver import OtlpReceiver


@dataclass
class OtlpGrpcReceiver(OtlpReceiver):
    _grpc: Any = None
    _port: int = 0

    @property
    def endpoint(self) -> str:
        """`http://127.0.0.1:PORT`: the gRPC exporter sends in plain text to an `http`
        endpoint (no TLS on loopback)."""
        assert self._grpc is not None, "the receiver is not running"
        return f"http://127.0.0.1:{self._port}"

    def __enter__(self) -> OtlpGrpcReceiver:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        receiver = self

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:  # the RPC is named so
                receiver.take(request.SerializeToString())
                return trace_service_pb2.ExportTraceServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
        self._port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc = server
        return self

    def __exit__(self, *exc: object) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None
