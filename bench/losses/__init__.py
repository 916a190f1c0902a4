"""Losses shared by the methods: dense CRF (single image and multi-frame colour)."""
