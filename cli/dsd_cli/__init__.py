"""The `dsd` command line: one entry point for the dev cluster, runtime, simulator and operator.

Each sub-app imports its subsystem lazily so that `dsd dev ...` never pays for importing torch.
"""
