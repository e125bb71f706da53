"""Training runs as experiments: one run end to end (``training``), tracked and registered in MLflow
(``tracked``), asked for with one request object (``request``), and the three-model comparison
(``compare``). Importing the package loads nothing; ``request`` alone is torch-free."""
