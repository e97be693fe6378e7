"""Component adapters: one per network family (the RVC synthesizer first); see ``components.base``."""
