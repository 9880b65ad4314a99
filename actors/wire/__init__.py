"""The cross-process contract: frames, typed messages, calls and stable errors.

Every actor imports this package and nothing in it imports anything else of
userhub, so the wire can be read, tested and fuzzed on its own.
"""
