"""Small helpers every layer may use: atomic file writes (``io``) and device/dtype choice (``device``)."""
