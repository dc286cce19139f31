"""Side effects on the cluster: reads, server-side apply, status patches, Events; the reconcile loop."""
