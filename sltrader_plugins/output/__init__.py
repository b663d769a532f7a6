"""What a run and a bench show: the terminal's tables and progress (``terminal``), the
run's report (``report``) and the bench's picture (``plot``)."""
