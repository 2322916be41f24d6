"""WebDataset shards: writing (``shards.writer``), verifying (``shards.verify``) and the
trainer-side loader (``shards.loader``, which imports neither ray nor curate's engine).

Submodules are imported on use so that the loader stays light.
"""
