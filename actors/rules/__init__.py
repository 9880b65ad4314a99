"""Pure rules: what a valid username, nickname, password, token or picture key is.

No I/O and no state; any actor may apply them, and the unit tests need nothing but
the functions.
"""
