"""Test helpers, one importable package (as temporalio's own SDK tests keep theirs):

- `data`: parties, orders and ids in the real database
- `cases`: driving case workflows on the time-skipping server (start, wait, jump the clock, settle)
- `servers`: starting the servers a test needs without port races, with errors that say what failed

conftest.py only declares fixtures; it imports from here, never the other way round.
"""
