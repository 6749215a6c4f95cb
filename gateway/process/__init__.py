"""
The process: the twistd plugin's options, the service tree (the
composition root), the worker pool and the worker's entry point.
"""
