"""Send growth events with the official OpenTelemetry Python SDK.

An independent OTLP client for the end-to-end tests: nothing here knows the
collector; it uses only stock OpenTelemetry APIs (a LoggerProvider, the OTLP log
exporters, Logger.emit). Reads a JSON list of records on stdin:

    [{"event_name": "expense_logged",       # optional: LogRecord.event_name
      "attributes": {"user.id": "alice", "event.name": "...", "amount": 12.5},
      "time_unix_nano": 1764000000000000000}]  # optional

and exports them to --endpoint over --protocol grpc|http, then flushes.
Exits non-zero when the flush did not complete.
"""

import argparse
import json
import sys

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource


def exporter(protocol: str, endpoint: str):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(endpoint=endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint=endpoint.rstrip("/") + "/v1/logs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True, help="collector base URL, e.g. http://127.0.0.1:4317")
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--service-name", required=True, help="resource service.name (the app)")
    args = parser.parse_args()

    records = json.load(sys.stdin)
    provider = LoggerProvider(resource=Resource.create({"service.name": args.service_name}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter(args.protocol, args.endpoint)))
    logger = provider.get_logger("growth-e2e-python")
    for r in records:
        logger.emit(
            timestamp=r.get("time_unix_nano"),
            severity_number=SeverityNumber.INFO,
            body=r.get("body", "growth event"),
            attributes=r.get("attributes", {}),
            event_name=r.get("event_name"),
        )
    flushed = provider.force_flush(timeout_millis=20_000)
    provider.shutdown()
    print(json.dumps({"sent": len(records), "flushed": bool(flushed)}))
    return 0 if flushed else 1


if __name__ == "__main__":
    sys.exit(main())
