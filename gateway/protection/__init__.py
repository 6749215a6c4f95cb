"""
Protection mechanisms: token buckets (local and shared by workers),
circuit breakers, IP address ranges.  The filters that apply them per API
live in L{gateway.filters}.
"""
