"""
The request pipeline: the proxy resource, the exchange of one request,
aggregation, mirroring and retries.
"""
