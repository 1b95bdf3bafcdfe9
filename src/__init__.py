"""The worker (Model Zoo style): `python src/train.py RUN_DIR` trains the job in RUN_DIR/job.json.

Packages, top to bottom: `infer` (export, predict), `pictures` (run pictures, figures),
`training` (transfer, checkpoints, callbacks, evaluation, the distributed context), `data`
(ImageFolder pipelines), `model` (ResNet, stages, heads), `native` (the CPU path's C++ kernels),
and `testing` (the fault switch tests use). `src` imports `launcher.core` and nothing else of
the launcher.
"""
