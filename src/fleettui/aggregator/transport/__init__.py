"""The one way the operator side talks to a node: HTTP/1.1 framed by h11, per-node clients.

`client.NodeClient` carries every request (polls, audit pages, actions), `stream.PushStream`
the event stream, `sse` parses it, `framing` turns bytes into answers and `errors` says what
went wrong in one vocabulary. Nothing here knows about node kinds, workers or views.
"""
