"""The closed loop: observe Prometheus, decide (planning), act (applying), once per autotune interval."""
