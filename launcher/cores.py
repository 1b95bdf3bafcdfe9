"""Kept for run directories rendered before packrun had one node entry point (job.json schema 1):
their scripts run `python -m launcher.cores`, which forwards to `python -m launcher.node`."""

if __name__ == "__main__":
    from launcher.node.main import legacy
    legacy("cores")
