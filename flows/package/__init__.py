"""The ``genreflow`` package itself: its layers are the subpackages (genreflow.flows, .tasks, .model, .storage,
.bench), each installed from its own top-level folder; this folder only makes ``python -m genreflow`` work
(__main__.py) beside the ``genreflow`` command."""
