"""Leaf package: decoding media onto grids (``decoding.media``) and the Kaldi fbank
(``decoding.mel``). Used by ``filters/``, ``sync_classifier/``, ``shards/`` and ``curate/``;
imports none of them."""
