"""The test process's own gRPC core: errors only, as the service's (``logs.quiet_grpc_core``).

Core reads ``GRPC_VERBOSITY`` once, when ``grpc`` is first imported: here, before any test
module. Core's INFO lines ("Got goaway ...", written by its own threads) otherwise land
in the middle of pytest's progress. The variable is taken back at once, so that the
processes the tests start inherit the environment they would in production, and a test
of the service's own quieting still fails without it.
"""

from __future__ import annotations

import os

if "GRPC_VERBOSITY" not in os.environ and "GRPC_TRACE" not in os.environ:
    os.environ["GRPC_VERBOSITY"] = "ERROR"
    try:
        import grpc  # noqa: F401
    finally:
        del os.environ["GRPC_VERBOSITY"]
