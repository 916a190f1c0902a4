"""Losses shared by the methods: dense CRF (single image and multi-frame colour), the extended
log-barrier size constraint."""
