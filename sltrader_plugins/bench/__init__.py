"""The bench: every plugin set side by side on the reference trader (``reference``), on
several traders at once (``traders``) or on a trader of your own (``trader``); each run
in a fresh process (``worker``)."""
