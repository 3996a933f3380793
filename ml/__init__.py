"""Thresher's ML library and GPU worker (the compute plane). Never imports ``app``."""
