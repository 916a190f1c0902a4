// Python module object for bench._C. The ops themselves are registered with the dispatcher
// (TORCH_LIBRARY_FRAGMENT in csrc/ops/*.cpp) when this shared library is loaded; the module
// only tells Python which kernels were compiled in.
#include <Python.h>

#ifdef WSOL_WITH_CUDA
static const char* kFlavour = "cuda";
#else
static const char* kFlavour = "cpu";
#endif

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr) PyModule_AddStringConstant(module, "flavour", kFlavour);
  return module;
}
