"""DSD operator: reconciles DSDDeployment resources with kopf."""
