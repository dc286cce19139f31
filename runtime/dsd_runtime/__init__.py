"""DSD runtime: target server (verification, KV cache) and draft server (speculation, OpenAI API)."""
