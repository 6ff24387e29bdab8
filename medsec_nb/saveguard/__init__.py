"""The save guard: keyed fingerprints of open studies (kernels publish them) and the Jupyter
server's pre-save hook that keeps those values out of saved notebooks."""
