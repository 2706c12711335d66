"""The HTTP gateway: browsers reach the AmperityService through it, via the gRPC stub.

``create_gateway_app`` builds the Starlette app; ``run_gateway`` serves it with uvicorn.
"""

from amperity_signal.gateway.app import create_gateway_app
from amperity_signal.gateway.server import run_gateway
from amperity_signal.gateway.settings import (
    GatewaySettings,
    PipelineSettings,
    load_gateway_settings,
    settings_from_config,
)

__all__ = [
    "GatewaySettings",
    "PipelineSettings",
    "create_gateway_app",
    "load_gateway_settings",
    "run_gateway",
    "settings_from_config",
]
