"""
Balancing: the live state of each backend server, the load balancers
that pick one, and active health checks.
"""
