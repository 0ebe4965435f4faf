"""``harness reproduce``: experiments as data -> a plan of runs -> resumable training in subprocesses.

* :mod:`.spec`     experiment and profile YAML files (``harness/configs/{experiments,profiles}/``)
* :mod:`.plan`     configs built with ``load_config`` (validated before anything trains), hashes, run-store state, order
* :mod:`.execute`  subprocess scheduler (``python -m harness train`` / torchrun), logs, demo data generation
* :mod:`.cli`      the ``reproduce`` / ``tables`` / ``check`` commands
"""
