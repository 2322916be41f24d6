"""What the stages share and are not stages themselves: the stage declaration and the build
context (``declare``), what earlier stages wrote that later ones read (``inputs``), and the
windows table with what identifies split and score items (``window_table``). Only
``curate/stages/`` and the build import it."""
