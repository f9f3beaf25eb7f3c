"""cai-ray: Cross-domain Anomaly Injection at cluster scale."""

__version__ = "0.2.0"
