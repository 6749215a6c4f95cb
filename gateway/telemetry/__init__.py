"""
What the gateway tells about itself: per-API and per-server stats and
the Prometheus metrics.
"""
