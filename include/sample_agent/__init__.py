"""The sample support agent and the workload generator that fills checkpoint stores with it.

For demos, tests and benchmarks only: nothing in production depends on this package.
"""
