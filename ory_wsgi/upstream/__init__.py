"""Transport to the application: how the proxy reaches each upstream and forwards to it.

- `transport`: an upstream's address and TLS settings; opens one connection.
- `pool`: kept-alive connections to one upstream (`UpstreamPool`).
- `forwarder`: the WSGI app streaming a request to one upstream (`Forwarder`).
- `websocket`: WebSocket upgrades spliced to the upstream (`WebSocketSplice`).
- `router`: per-rule upstreams, one of each of the above per upstream (`UpstreamRouter`).
"""
