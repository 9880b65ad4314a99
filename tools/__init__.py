"""Programs that are not actors: database set-up, the log tool, the crash reporter
(a supervisord event listener) and the private-tree harness of tests, benchmarks and
chaos runs. They may import the actors' packages; no actor imports them.
"""
