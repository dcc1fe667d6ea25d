"""Experiments built from the layers below: the tweak lab (``tweak``: swap a component, retrain the tiny
model for a minute, compare over seeds) and Ghost Attention in miniature (``gatt``)."""
