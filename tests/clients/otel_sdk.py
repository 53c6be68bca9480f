"""The OpenTelemetry Python SDK, exporting over OTLP/HTTP (protobuf) through
the router: one span, one metric point and one log record, each to its
signal's endpoint, with the tenant header. Exits non-zero when an export
fails. Usage: otel_sdk.py <router base URL> <tenant>."""

import logging
import sys

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_checked import Checked, failed

base, tenant = sys.argv[1], sys.argv[2]
headers = {"X-Tenant-ID": tenant}
resource = Resource.create({"service.name": "mirador-otel-sdk"})

tracer_provider = TracerProvider(resource=resource)
spans = Checked("traces", OTLPSpanExporter(endpoint=f"{base}/insert/opentelemetry/v1/traces", headers=headers))
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
with tracer_provider.get_tracer("mirador").start_as_current_span("mirador-span"):
    pass

metrics = OTLPMetricExporter(endpoint=f"{base}/opentelemetry/v1/metrics", headers=headers)
reader = PeriodicExportingMetricReader(Checked("metrics", metrics), export_interval_millis=60_000)
meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
meter_provider.get_meter("mirador").create_counter("mirador_otel_sdk_total").add(3)
meter_provider.force_flush()

logger_provider = LoggerProvider(resource=resource)
logs = Checked("logs", OTLPLogExporter(endpoint=f"{base}/insert/opentelemetry/v1/logs", headers=headers))
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
logger = logging.getLogger("mirador")
logger.addHandler(LoggingHandler(logger_provider=logger_provider))
logger.warning("mirador-log-record")
logger_provider.force_flush()

if failed:
    print("failed exports:", failed, file=sys.stderr)
    sys.exit(1)
print("exported traces, metrics, logs")
