"""Python face of the custom ops in csrc/: typed wrappers, fake kernels, autograd, and a
pure-torch reference for each op (the test oracle and the fallback without the extension).

One module per op stem, matching csrc/ops/<op>.cpp, csrc/cpu/<op>.cpp, csrc/cuda/<op>.cu."""
