"""The OpenTelemetry Python SDK, exporting over OTLP/gRPC through the router:
for each signal asked for, one span, one metric point or one log record
named after the tenant, with the tenant header as gRPC metadata and the
tenant in the resource. Exits non-zero when an export fails.
Usage: otel_sdk_grpc.py <router host:port> <tenant> [traces,metrics,logs]."""

import logging
import sys

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_checked import Checked, failed

endpoint, tenant = sys.argv[1], sys.argv[2]
signals = sys.argv[3].split(",") if len(sys.argv) > 3 else ["traces", "metrics", "logs"]
options = {"endpoint": f"http://{endpoint}", "insecure": True, "headers": {"x-tenant-id": tenant}, "timeout": 30}
resource = Resource.create({"service.name": f"svc-{tenant}", "mirador.tenant": tenant})

if "traces" in signals:
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(Checked("traces", OTLPSpanExporter(**options))))
    with tracer_provider.get_tracer("mirador").start_as_current_span(f"span-{tenant}"):
        pass
    tracer_provider.shutdown()

if "metrics" in signals:
    reader = PeriodicExportingMetricReader(Checked("metrics", OTLPMetricExporter(**options)), export_interval_millis=60_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter_provider.get_meter("mirador").create_counter(f"metric_{tenant}_total").add(3)
    meter_provider.force_flush()
    meter_provider.shutdown()

if "logs" in signals:
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(Checked("logs", OTLPLogExporter(**options))))
    logger = logging.getLogger(f"mirador-{tenant}")
    logger.propagate = False
    logger.addHandler(LoggingHandler(logger_provider=logger_provider))
    logger.warning(f"log-{tenant}")
    logger_provider.force_flush()
    logger_provider.shutdown()

if failed:
    print("failed exports:", failed, file=sys.stderr)
    sys.exit(1)
print("exported", ",".join(signals))
