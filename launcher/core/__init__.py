"""The core both planes stand on: the job spec (`spec`, `devices`, `hostlist`), the
run-directory protocol (`rundir`: names and schema, job.json, atomic writes, lock, attempts,
failure, metrics, state, the sweep directory),
what Ascend's tools print and HCCL's rank tables hold (`ascend`: pure parsers),
errors and exit statuses, console logging, the sample rule of an ImageFolder, a rank's
environment and cores, reading workers' output, the compile cache's store, and leaving a
process that imported MindSpore without its slow teardown (`quick_exit`).

May import: the standard library and third-party packages only; nothing else of packrun.
The worker (`src`) imports this package and nothing else of `launcher`.
"""
