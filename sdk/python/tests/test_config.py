import unittest

from growth_sdk.config import ConfigError, read


class ConfigTest(unittest.TestCase):
    def test_defaults(self):
        config = read({})
        self.assertEqual((config.protocol, config.url), ("grpc", "http://127.0.0.1:4317"))
        self.assertEqual(config.service_name, "unknown_service")
        self.assertFalse(config.disabled)

    def test_every_standard_variable(self):
        config = read(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cret,x-tenant=a%2Cb",
                "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-resource,deployment.environment=prod",
                "GROWTH_USER_HASH_KEY": "k3y",
            }
        )
        self.assertEqual(config.url, "https://collector:4318/v1/logs")
        self.assertEqual(config.headers, [("authorization", "Bearer s3cret"), ("x-tenant", "a,b")])
        self.assertEqual((config.compression, config.timeout), ("gzip", 2.5))
        self.assertEqual(config.service_name, "from-resource")
        self.assertEqual(config.resource_attributes, [("deployment.environment", "prod")])
        self.assertEqual(config.user_hash_key, b"k3y")
        self.assertNotIn("s3cret", repr(config))

    def test_logs_variables_and_arguments_win(self):
        env = {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://c:4317",
            "OTEL_SERVICE_NAME": "env-app",
            "GROWTH_SDK_DISABLED": "true",
        }
        config = read(env)
        self.assertEqual((config.protocol, config.url, config.service_name), ("grpc", "http://c:4317", "env-app"))
        self.assertTrue(config.disabled)
        config = read(env, service_name="mine", protocol="http", endpoint="http://x:4318", disabled=False)
        self.assertEqual((config.protocol, config.url, config.service_name), ("http", "http://x:4318/v1/logs", "mine"))
        self.assertFalse(config.disabled)

    def test_certificate_file_from_the_logs_or_general_variable(self):
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".pem") as logs, tempfile.NamedTemporaryFile(suffix=".pem") as general:
            config = read({"OTEL_EXPORTER_OTLP_CERTIFICATE": general.name})
            self.assertEqual(config.certificate_file, general.name)
            config = read(
                {"OTEL_EXPORTER_OTLP_CERTIFICATE": general.name, "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE": logs.name}
            )
            self.assertEqual(config.certificate_file, logs.name)
            self.assertEqual(read({}, certificate_file=logs.name).certificate_file, logs.name)
        self.assertIsNone(read({}).certificate_file)
        with self.assertRaises(ConfigError):
            read({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"})

    def test_bad_values_are_errors(self):
        for var, value in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("GROWTH_SDK_DISABLED", "maybe"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ]:
            with self.assertRaises(ConfigError, msg=var):
                read({var: value})


if __name__ == "__main__":
    unittest.main()
