"""Unit tests of the pure modules, one file per module (``test_<module>.py``).

They run in seconds with no Redis and no server: a test here never requests a fixture that starts a
process (``server``, ``redis``, ``store``, ``backend`` …); ``make unit`` runs only this folder.
"""
