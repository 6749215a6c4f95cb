"""
Routing: the snapshot of the configuration that serves requests, the
route tree, routing rules and URL rewrites.
"""
