"""Experiments built from the layers below: Ghost Attention in miniature (``gatt``)."""
