"""The detector that measures what synthetic anomalies are worth: a UNet, its training, metrics."""
