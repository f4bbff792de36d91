"""``otel-velocity demo``: the service, an instrumented shop app and traffic, on 127.0.0.1 only.

``runner`` starts the service in this process and the shop (``shop``) as a child process under
``opentelemetry-instrument``. ``traffic`` sends the shop a bounded mix of requests.
"""
