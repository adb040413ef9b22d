"""Schemathesis hooks of .ci/fuzz-api: a component upload (`application/wasm`) is raw bytes,
sent as schemathesis sends `application/octet-stream`."""

import schemathesis

schemathesis.serializer.alias("application/wasm", "application/octet-stream")
