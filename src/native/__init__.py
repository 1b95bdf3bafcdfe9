"""The CPU path's native kernels: C++ sources here, compiled with g++ on first use (`kernels`).

May import: nothing of packrun.
"""
