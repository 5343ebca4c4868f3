"""The only package that imports torch (and, later, torch-geometric and lightning).

Everything here is imported lazily by the public functions, so that ``import phg2st_sc`` stays light.
"""
