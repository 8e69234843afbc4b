"""tlsgate: a self-hosted TLS endpoint gateway (SNI routing, passthrough or termination)."""

__version__ = "0.1.0"
