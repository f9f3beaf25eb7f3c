"""The domain-agnostic anomaly dataset (DAAD): real defects with masks from many domains."""
