"""Pure planning: spec + observations -> desired children, placement, status. No I/O."""
