"""packrun's control plane: turns a job into files and processes on laptops, login nodes and
compute nodes. MindSpore is never imported at module level here.

Layers, top to bottom; a package imports only packages below it (import-linter holds this,
pyproject.toml), and `src` (the worker) only where a command needs MindSpore:

    cli        the `packrun` commands, thin: parse, call one package, print
    demo       `packrun demo`: real transfer learning on data shipped in a PyPI package
    sweep      one job over many points: plan, sweep directory, local runs, a Slurm job array
    runs       reading run directories: status, ls, logs, reports
    node       the node-side programs the rendered launch scripts call (`python -m launcher.node`)
    multinode  a job on several servers without a scheduler: every node started, watched,
               stopped and restarted over ssh (`packrun run --nodes=N --hosts=...`)
    slurm      Slurm's commands: submit, follow, cancel, the batch protocol's requeue
    supervise  local processes: start, watch, stop, restart ranks on this machine
    preflight  checks that cost seconds before a run instead of a failed run later
    render     pure: a job spec in, the run directory's files out
    core       what both planes share: the job spec, the run-directory protocol, errors, logging

The four modules beside the packages (`attempts`, `cores`, `nodelist`, `ranktable`) are kept only
for run directories rendered before the node entry point: their scripts run `python -m
launcher.attempts ...`, which forwards to `python -m launcher.node`.
"""
