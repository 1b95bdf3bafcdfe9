"""The CPU path's native kernels: C++ sources here, compiled with g++ on first use (`kernels`).

May import: `launcher.core.rundir.names` (the PACKRUN_* variables it reads) and nothing else
of packrun.
"""
