"""
The C{gateway} command: declarative configuration through the admin API.
"""
