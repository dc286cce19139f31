"""kopf handlers: thin decorators that route every relevant watch event to one level-based reconcile."""
