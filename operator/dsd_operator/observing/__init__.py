"""Observing: what Prometheus measured about a DSDDeployment (beside applying, which writes to the cluster)."""
