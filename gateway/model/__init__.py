"""
The model: the schema toolkit, the resources (servers, clusters, apis,
routings), the config file, URL patterns.  Imports no transport.
"""
