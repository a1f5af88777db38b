"""The Python tracker never raises, keeps events across a failing collector
(honouring Retry-After), and reports honestly. The receiver here is a small
OTLP/HTTP server (it can answer 503 on cue); tests/tests/python_sdk.rs runs the
package against the real collector."""

import gzip
import http.server
import socket
import threading
import time
import unittest

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from growth_sdk import Tracker, UndeliveredError, hash_user


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Receiver:
    """OTLP/HTTP on a free port; the first `refuse` requests get 503 + Retry-After."""

    def __init__(self, refuse: int = 0, retry_after: str = "1", port: int = 0, delay: float = 0.0):
        self.records = []
        self.requests = 0
        self.concurrent = 0
        self.most_concurrent = 0
        lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with lock:
                    receiver.requests += 1
                    seen = receiver.requests
                    receiver.concurrent += 1
                    receiver.most_concurrent = max(receiver.most_concurrent, receiver.concurrent)
                try:
                    time.sleep(delay)
                    self.answer(body, seen)
                finally:
                    with lock:
                        receiver.concurrent -= 1

            def answer(self, body, seen):
                if seen <= refuse:
                    self.send_response(503)
                    self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = ExportLogsServiceRequest.FromString(body)
                with lock:
                    for resource_logs in request.resource_logs:
                        for scope_logs in resource_logs.scope_logs:
                            receiver.records.extend(scope_logs.log_records)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def tracker(endpoint, **kwargs):
    kwargs.setdefault("protocol", "http")
    return Tracker("py-test", endpoint=endpoint, env={}, user_hash_key="k", batch_delay=0.02, max_backoff=0.2, **kwargs)


def attribute(record, key):
    for kv in record.attributes:
        if kv.key == key:
            return kv.value
    return None


class TrackerTest(unittest.TestCase):
    def test_delivers_with_the_contract_and_hashes(self):
        receiver = Receiver()
        t = tracker(receiver.endpoint, compression="gzip")
        t.expense_logged("alice", 12.5, "groceries", source="messenger")
        t.install_pwa("bob")
        t.identify("anon-1", "carol")
        t.track("settings_opened", None, {"tab": "budget", "user.id": "raw", "n": 3, "ok": True, "tags": ["a", "b"]})
        report = t.shutdown(5)
        self.assertEqual((report.tracked, report.delivered), (4, 4), report)
        names = [r.event_name for r in receiver.records]
        self.assertEqual(names, ["expense_logged", "pwa_installed", "identify", "settings_opened"])
        expense = receiver.records[0]
        self.assertEqual(attribute(expense, "user.hash").string_value, hash_user("alice", "k"))
        self.assertEqual(attribute(expense, "source").string_value, "messenger")
        self.assertEqual(attribute(expense, "amount").double_value, 12.5)
        identify = receiver.records[2]
        self.assertEqual(attribute(identify, "anonymous.hash").string_value, hash_user("anon-1", "k"))
        anonymous = receiver.records[3]
        self.assertIsNone(attribute(anonymous, "user.hash"))
        self.assertIsNone(attribute(anonymous, "user.id"))
        self.assertEqual(len(attribute(anonymous, "tags").array_value.values), 2)
        for record in receiver.records:
            self.assertNotIn(b"alice", record.SerializeToString())
        receiver.close()

    def test_during_a_key_rotation_both_hashes_are_sent(self):
        receiver = Receiver()
        t = tracker(receiver.endpoint, user_hash_previous_key="old")
        t.track("expense_logged", "alice")
        t.track("settings_opened", None, {"user.hash.previous": "f" * 64})
        report = t.shutdown(5)
        self.assertEqual(report.delivered, 2, report)
        known, anonymous = receiver.records
        self.assertEqual(attribute(known, "user.hash").string_value, hash_user("alice", "k"))
        self.assertEqual(attribute(known, "user.hash.previous").string_value, hash_user("alice", "old"))
        # Not a property an app can set; anonymous events have no user to pair.
        self.assertIsNone(attribute(anonymous, "user.hash.previous"))
        receiver.close()
        # From the environment; no previous key, no second hash.
        env_tracker = Tracker("app", env={"GROWTH_USER_HASH_KEY": "k", "GROWTH_USER_HASH_PREVIOUS_KEY": "old"}, disabled=True)
        self.assertEqual(env_tracker.config.user_hash_previous_key, b"old")
        self.assertNotIn("old", repr(env_tracker.config))
        self.assertIsNone(Tracker("app", env={}, disabled=True).config.user_hash_previous_key)

    def test_track_never_raises(self):
        t = tracker(f"http://127.0.0.1:{free_port()}")
        weird = [
            ("", None, None),
            ("bad\nname", "u", None),
            ("x" * 500, "u", None),
            (None, "u", None),
            ("ok", 42, {"k": object(), 3: "non-str key", "nested": {"a": 1}}),
            ("ok", "u", "not a mapping"),
        ]
        for event, user, attributes in weird:
            t.track(event, user, attributes)
        report = t.report()
        self.assertEqual(report.tracked, len(weird))
        self.assertEqual(report.tracked, report.invalid + report.pending + report.delivered + report.failed + report.dropped)
        with self.assertRaises(UndeliveredError):
            t.shutdown(0.5)

    def test_down_collector_fails_honestly_in_bounded_time(self):
        t = tracker(f"http://127.0.0.1:{free_port()}")
        for i in range(10):
            t.track("expense_logged", f"u{i}")
        started = time.monotonic()
        with self.assertRaises(UndeliveredError) as caught:
            t.shutdown(1.0)
        self.assertLess(time.monotonic() - started, 3.0)
        report = caught.exception.report
        self.assertEqual((report.failed, report.delivered, report.pending), (10, 0, 0), report)
        self.assertGreater(report.retries, 0)

    def test_retry_after_is_honoured_and_nothing_lost(self):
        receiver = Receiver(refuse=2, retry_after="1")
        t = tracker(receiver.endpoint)
        started = time.monotonic()
        for i in range(50):
            t.track("expense_logged", f"u{i}", {"seq": i})
        report = t.shutdown(10)
        self.assertGreaterEqual(time.monotonic() - started, 2.0, "two refusals asking for 1 s each")
        self.assertEqual((report.delivered, report.retries), (50, 2), report)
        self.assertEqual(sorted(attribute(r, "seq").int_value for r in receiver.records), list(range(50)))
        receiver.close()

    def test_outage_then_recovery_and_flush_reports_each_loss_once(self):
        losses = []
        port = free_port()
        t = tracker(f"http://127.0.0.1:{port}", max_queue_bytes=30_000, on_loss=losses.append)
        for i in range(300):
            t.track("expense_logged", f"u{i}")
        dropped = t.report().dropped
        self.assertGreater(dropped, 0, "the byte budget binds while the collector is down")
        time.sleep(0.5)
        receiver = Receiver(port=port)
        with self.assertRaises(UndeliveredError) as caught:
            t.flush(10)
        report = caught.exception.report
        self.assertEqual((report.delivered, report.dropped, report.pending), (300 - dropped, dropped, 0), report)
        self.assertEqual(len(receiver.records), 300 - dropped)
        t.track("later", "u1")
        self.assertEqual(t.flush(10).delivered, 301 - dropped, "an old loss is not reported again")
        with self.assertRaises(UndeliveredError):
            t.shutdown(5)  # the drops stay in the final report
        self.assertEqual(sum(loss["dropped"] for loss in losses), dropped)
        receiver.close()

    def test_several_exports_in_flight_each_event_once(self):
        receiver = Receiver(delay=0.3)
        t = tracker(receiver.endpoint, max_batch_records=50, max_concurrent_exports=4)
        started = time.monotonic()
        for i in range(400):
            t.track("expense_logged", f"u{i}", {"seq": i})
        report = t.flush(20)
        took = time.monotonic() - started
        self.assertEqual((report.delivered, report.pending), (400, 0), report)
        self.assertEqual(receiver.most_concurrent, 4, "four exports at once, never more")
        # 8 batches one at a time would take 2.4 s.
        self.assertLess(took, 2.0)
        self.assertEqual(sorted(attribute(r, "seq").int_value for r in receiver.records), list(range(400)))
        t.shutdown(5)
        receiver.close()

    def test_refusals_among_concurrent_exports_are_retried_none_lost(self):
        receiver = Receiver(refuse=3, retry_after="0", delay=0.05)
        t = tracker(receiver.endpoint, max_batch_records=10, max_concurrent_exports=4)
        for i in range(200):
            t.track("expense_logged", f"u{i}", {"seq": i})
        report = t.shutdown(10)
        self.assertEqual((report.delivered, report.failed), (200, 0), report)
        self.assertEqual(sorted(attribute(r, "seq").int_value for r in receiver.records), list(range(200)))
        self.assertGreaterEqual(report.retries, 3)
        receiver.close()

    def test_matrix_of_protocols_compression_and_collector_states_never_raises(self):
        """gRPC and HTTP, plain and gzip, against a collector that is up, down, or
        accepts connections and never answers: track never raises or blocks, and
        shutdown reports every event in bounded time."""
        import grpc
        from concurrent import futures
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

        received = []

        class Service(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):
                for resource_logs in request.resource_logs:
                    for scope_logs in resource_logs.scope_logs:
                        received.extend(scope_logs.log_records)
                return logs_service_pb2.ExportLogsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Service(), server)
        grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        http_receiver = Receiver()
        hung = socket.socket()
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # never accepted, never answered
        hung_endpoint = f"http://127.0.0.1:{hung.getsockname()[1]}"
        down_endpoint = f"http://127.0.0.1:{free_port()}"
        try:
            for protocol in ("grpc", "http"):
                up = f"http://127.0.0.1:{grpc_port}" if protocol == "grpc" else http_receiver.endpoint
                for compression in ("none", "gzip"):
                    for state, endpoint in (("up", up), ("down", down_endpoint), ("hung", hung_endpoint)):
                        case = f"{protocol}/{compression}/{state}"
                        t = tracker(endpoint, protocol=protocol, compression=compression, export_timeout=0.3)
                        started = time.monotonic()
                        for i in range(50):
                            t.track("expense_logged", f"u{i}", {"seq": i, "case": case})
                        self.assertLess(time.monotonic() - started, 1.0, case)
                        if state == "up":
                            report = t.shutdown(5)
                            self.assertEqual((report.delivered, report.failed), (50, 0), case)
                            continue
                        with self.assertRaises(UndeliveredError, msg=case) as caught:
                            t.shutdown(0.5)
                        self.assertLess(time.monotonic() - started, 3.0, case)
                        report = caught.exception.report
                        self.assertEqual((report.tracked, report.failed, report.pending), (50, 50, 0), case)
            for protocol, records in (("grpc", received), ("http", http_receiver.records)):
                cases = sorted({attribute(r, "case").string_value for r in records})
                self.assertEqual(cases, [f"{protocol}/gzip/up", f"{protocol}/none/up"])
                self.assertEqual(len(records), 100, protocol)
        finally:
            server.stop(0)
            http_receiver.close()
            hung.close()

    def test_disabled_is_a_no_op(self):
        t = Tracker("app", env={"GROWTH_SDK_DISABLED": "true"})
        t.track("expense_logged", "u1")
        self.assertTrue(t.disabled)
        self.assertEqual(t.shutdown().tracked, 0)


if __name__ == "__main__":
    unittest.main()
