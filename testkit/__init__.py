"""What tests and benchmarks share, outside ``tests`` (nothing outside tests imports
``tests``): generated audio-visual media and what to read back from it (``avmedia``),
counting a scorer's inputs (``counting``), building and killing a real ``curate build``
(``kill_resume``). Not part of the installed package."""
