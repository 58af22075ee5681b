"""``sync-server check``: a bundled correctness checker that drives a running server (or one it
spawns and kills) with a bounded workload and proves, from the outside, what the server promises:
no acknowledged write lost, gapless per-object event ids, exactly-once in-order delivery to
subscribers that reconnect, and linearizable compare-and-set on Documents.

It imports realtime (the SDK-protocol client, token minting) and storage's pure helpers, never app:
the command line in app/cli.py only hands it its arguments.
"""
