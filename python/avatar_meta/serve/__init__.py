"""The adaptation service (`avatar-meta serve`): few-shot episodes in, signed PolicyWeights out.

adapter.py does the work (shared with the in-process path), service.py the RPCs, server.py
security and process lifetime, health.py grpc.health.v1, client.py the reference client.
"""
