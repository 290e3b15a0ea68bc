/* A stand-in for the NVIDIA driver library (libcuda.so.1) on a machine without a GPU.
 *
 * With it on LD_LIBRARY_PATH, TVM's CUDA runtime (libtvm_runtime_cuda.so, which links
 * libcuda.so.1) loads as it does on a GPU machine, so TVM takes the code paths it takes
 * when a driver is present -- e.g. tvm.compile and the tuning builders compile CUDA kernels
 * with NVRTC instead of embedding their source -- while every device call fails with
 * CUDA_ERROR_NO_DEVICE: there is no device to run on.  tvmflow's tests and the CPU check
 * of scripts/gpu/device.sh use it to meet, here, what would break on first contact there.
 *
 * Build: gcc -shared -fPIC -o libcuda.so.1 stub_libcuda.c
 */
#include <stddef.h>

typedef int CUresult;
#define CUDA_SUCCESS 0
#define CUDA_ERROR_NO_DEVICE 100

CUresult cuInit(unsigned int flags) { (void)flags; return CUDA_ERROR_NO_DEVICE; }
CUresult cuDriverGetVersion(int *version) { if (version) *version = 13000; return CUDA_SUCCESS; }
CUresult cuDeviceGetCount(int *count) { if (count) *count = 0; return CUDA_ERROR_NO_DEVICE; }
CUresult cuGetErrorName(CUresult err, const char **name) {
  (void)err; if (name) *name = "CUDA_ERROR_NO_DEVICE"; return CUDA_SUCCESS;
}
CUresult cuGetErrorString(CUresult err, const char **text) {
  (void)err; if (text) *text = "stub driver: no CUDA-capable device"; return CUDA_SUCCESS;
}
/* the driver entry points libtvm_runtime_cuda.so links against */
CUresult cuDeviceGetName(char *name, int len, int dev) { (void)name; (void)len; (void)dev; return CUDA_ERROR_NO_DEVICE; }
CUresult cuFuncSetAttribute(void *f, int attr, int value) { (void)f; (void)attr; (void)value; return CUDA_ERROR_NO_DEVICE; }
CUresult cuLaunchKernelEx(const void *config, void *f, void **params, void **extra) {
  (void)config; (void)f; (void)params; (void)extra; return CUDA_ERROR_NO_DEVICE;
}
CUresult cuModuleGetFunction(void **f, void *mod, const char *name) { (void)f; (void)mod; (void)name; return CUDA_ERROR_NO_DEVICE; }
CUresult cuModuleLoadData(void **mod, const void *image) { (void)mod; (void)image; return CUDA_ERROR_NO_DEVICE; }
CUresult cuModuleUnload(void *mod) { (void)mod; return CUDA_ERROR_NO_DEVICE; }
CUresult cuTensorMapEncodeTiled(void *map, ...) { (void)map; return CUDA_ERROR_NO_DEVICE; }
