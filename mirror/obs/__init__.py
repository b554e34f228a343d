"""Observability: the node's Prometheus metrics (`GET /metrics`).

    metrics.py     Metrics: the node's registry and its process counts, the exposition
    counts.py      the accumulators the hot paths bump (cheaper than a library counter call)
    wrappers.py    wrappers the composition root puts around components to count them
    figures.py     catalog figures (store, audit, aliases, scans), cached for a few seconds
    collectors.py  the node collector: families read at scrape time (live state, figures)

The HTTP side (the route, the request observer) is http/metrics.py. With
`[server] metrics = false` nothing here is built: no route, no wrapper, no cost.
"""
