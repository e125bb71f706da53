"""Experiments at scale: hyperparameter sweeps and k-fold cross-validation as parent jobs.

A parent job (``type="sweep"`` or ``"crossval"``) fans out into child ``train`` jobs (rows with
``parent_id``) queued on the ``gpu`` queue, so N GPU workers train N children at once; the parent then
ranks (sweep) or pools (cross-validation) what its children produced.

How a parent waits without holding a worker
-------------------------------------------
The parent's task (``bmseg.sweep`` / ``bmseg.crossval``, on the ``cpu`` queue) never waits in a loop. One
worker process may consume both queues (``bmseg worker --queues gpu,cpu``, solo pool): a parent polling
its children there would wait forever for children only that same worker could run. Instead the task
runs in *steps*, each short and safe to repeat; the rows hold the state (:func:`.steps.advance`):

``start``    (sent by ``submit_job``) claims the parent, opens its MLflow parent run, writes every child
             row — reusing finished ones, see below — and only then queues the children's tasks, so no
             child can end before all its siblings exist. Then it returns.
``check``    (sent by :func:`bmcore.jobs.runner.run_job` when the last child ends, see
             :func:`.steps.notify_parent`, and by ``cancel_job``) counts the children — progress is
             finished / total — and once all have ended aggregates (the ranked table, or the cross-validation
             summary) and ends the parent: its Result, artifacts, MLflow run, and ``champion`` on request.
``recheck``  the same as ``check``, then sent again with a countdown (:data:`.steps.RECHECK_SECONDS`): a
             backstop for children that ended outside ``run_job`` (the reaper failing a lost child, the
             broker down when the last child reported). One chain per parent, started by ``start``.

So a solo worker on both queues runs start → child → … → child → check in turn, and a pool of workers
trains the children in parallel while any of them takes the parent's short steps. Two children ending at
once may both send ``check``: aggregating twice is harmless (its MLflow writes are idempotent) and the
parent ends in one conditional ``UPDATE``. A parent is never heartbeaten, and the reaper leaves it alone
(its type is not in ``TASK_NAMES``); its children are ordinary train jobs, which the reaper watches.

Cancelling a parent (:func:`bmcore.jobs.lifecycle.cancel_job`) cancels its queued children at once and asks
running ones to stop; the parent ends ``cancelled``, with the table of what did finish,
at the check that follows.

Reuse
-----
Each child configuration has a stable hash (:func:`bmcore.jobs.parent_params.config_hash`: data path,
split seed or explicit split, test scoring, and every TrainConfig field with defaults filled in), kept in
the child's params as ``config_hash``. Before writing a child the parent looks for a succeeded train job
with that hash (of any parent, or none) whose checkpoint still exists. If there is one, the child row is
written already ``succeeded`` with a copy of that job's Result (metrics plus ``reused_from``: the job that
trained it), its MLflow run and registered version, and nothing is trained; the table marks the row
``reused: true``. A reused child's MLflow run stays nested under the parent run of the sweep that trained it.

Search spaces (sweep params)
----------------------------
``grid``: ``{"lr": [1e-3, 3e-4], "arch": ["unet", "cnn"]}`` — every combination, in order (the last name
varies fastest), the first ``budget`` of them when a budget is given. ``random``: ``{"lr": [1e-4, 1e-2],
"dropout": [0.0, 0.5], "arch": ["unet", "cnn"]}`` with ``budget`` draws seeded by ``seed``: a two-number
list for a float parameter is a range (log-uniform for ``lr``, uniform otherwise, 4 significant
digits), any other list a set of choices; ``{"choice": [...]}``, ``{"uniform": [lo, hi]}`` and
``{"log_uniform": [lo, hi]}`` say it explicitly; a configuration drawn twice runs once. Any TrainConfig
field may be searched. ``base`` holds training parameters every child gets (searched values override
it); ``split_seed`` (default 0) gives every child the same patient split, so all are ranked on the same
validation patients; ``promote_best`` moves the ``champion`` alias to the best child's registered version.
Ranking: validation lesion-wise Dice (``val_lesion_dice``, higher first), then ``val_loss`` (lower
first); children that failed or were cancelled are listed after the ranked ones. A failed child does not
fail the sweep; a sweep whose children all failed fails.

Cross-validation (crossval params)
----------------------------------
``folds`` k (2..10) patient groups (:func:`bmcore.data.split.kfold_patients`, seeded by ``seed``): child i
tests on group i, validates on group i+1 (k = 2: on a fifth of the other patients) and trains on the
rest; the explicit split travels in its params (``split``). Each child scores its best model on its own
test fold (whole volumes, ``evaluate_test``), so the parent only pools: per-fold figures, mean ± std
(population, over the folds) of every numeric figure, and the out-of-fold lesion-wise metrics —
:func:`bmcore.metrics.summarize_cases` over every fold's test cases together, each study scored once.
A cross-validation succeeds only when every fold did: a partial one would not test every patient.

Modules
-------
Validation (torch-free, at submit time) sits below, in :mod:`bmcore.jobs.parent_params`. Here:
:mod:`.parsing` the command-line spelling of a search (torch-free: the web's form uses it), :mod:`.folds`
the cross-validation splits, :mod:`.aggregate` the ranked table and the cross-validation summary,
:mod:`.runs` the parent's MLflow run and ``promote_best``, :mod:`.finish` ending a parent, :mod:`.steps`
the task's steps. This ``__init__`` holds only this text.
"""
