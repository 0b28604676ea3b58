"""The command line (``diffusemix``, ``python -m diffusemix_core``): one module per command group.

* ``main.py``: builds the parser from the command modules and runs one command; ``failures.py`` turns any failure
  into one sentence;
* command modules, none importing another: ``preview.py``; ``workspace.py`` (augment, status, review, check,
  export); ``train.py``; ``curation.py`` (score, report);
* shared by them, at the bottom: ``args.py`` (argument types and flag groups), ``console.py`` (exit statuses,
  Ctrl-C, lines several commands print), ``auto_review.py`` (the rules of ``review --auto``).
"""
