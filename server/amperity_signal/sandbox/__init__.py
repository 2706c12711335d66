"""A faithful Amperity tenant on localhost: the sandbox the demo and the tests talk to.

It speaks the Real-time API of ``spec/amperity-api-notes.md`` (event ingest, profile lookup
and get) with JWT scopes, streams with routing and modes, collections with linking keys,
profiles that update a moment after ingest, identity stitching, context-dependent
attributes, an inspector and fault injection under ``/_sandbox/``. The service never
imports this package, and this package imports nothing else of ``amperity_signal``.
"""

from amperity_signal.sandbox.app import SandboxApp, create_app
from amperity_signal.sandbox.data import SandboxData, SandboxDataError, default_data, load_data
from amperity_signal.sandbox.server import run
from amperity_signal.sandbox.state import SandboxState
from amperity_signal.sandbox.tokens import PROFILE_READ, STREAM_WRITE, mint_token

__all__ = [
    "PROFILE_READ",
    "STREAM_WRITE",
    "SandboxApp",
    "SandboxData",
    "SandboxDataError",
    "SandboxState",
    "create_app",
    "default_data",
    "load_data",
    "mint_token",
    "run",
]
