"""
C{twistd gateway}: run the API gateway.
"""

from twisted.application.service import ServiceMaker

gateway = ServiceMaker(
    "Gateway",
    "gateway.process.tap",
    "An HTTP API gateway: routing, protection, load balancing, aggregation.",
    "gateway",
)
