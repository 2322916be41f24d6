"""curate: audio-visual dataset curation (AVSync15, Landscape, class-balanced splits)."""
__version__ = "0.1.0"
