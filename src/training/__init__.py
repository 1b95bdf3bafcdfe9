"""Training: transfer (freeze, head filtering), checkpoints, callbacks, learning-rate schedules,
evaluation, seeds, the feature cache, the compile cache (graphs kept across runs), and the
distributed context (`parallel`, `collective`, `cluster_wake`: MindSpore's fixed sleeps cut
short).

May import: `src.data`, `src.model`, `src.native`, `src.testing`, `launcher.core`.
"""
