"""What draft and target share: wire protocol, model loading, the causal-LM wrapper, errors."""
