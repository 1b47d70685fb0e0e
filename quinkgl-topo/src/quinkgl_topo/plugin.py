"""Entry point of quinkgl-topo (group `quinkgl`).

Its components land in later releases; until then this plugin registers nothing (core's catalog already knows
which components this distribution will provide, so manifests can name them).
"""
