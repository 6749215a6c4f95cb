"""
The model: the schema toolkit, the resources (certificates, servers,
clusters, apis, routings), the config file, URL patterns.  Imports no
transport.
"""
