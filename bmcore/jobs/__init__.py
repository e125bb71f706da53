"""The job service: validation, the row's life from submit to finish, the queue, and what workers run.

Modules import one way, each only those listed before it:

* :mod:`.errors` the exceptions;
* :mod:`.train_params` ← :mod:`.parent_params` ← :mod:`.params` parameter validation (torch-free);
* :mod:`.queue` Celery settings and sending tasks by name; :mod:`.search` reading jobs;
* :mod:`.lifecycle` submit, cancel, claim, progress, finish (torch-free: the web submits through it);
* :mod:`.reaper` heartbeats and lost workers;
* :mod:`.parents` sweeps and cross-validation (parent jobs and their steps);
* :mod:`.supervisor` the job process: a worker's jobs run there, within the hard time limit;
* :mod:`.runner` what a worker does with a job id.
"""
