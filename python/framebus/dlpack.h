/* SPDX-License-Identifier: MIT */
/*
 * The few DLPack structures framebus exports frames with, written from the
 * DLPack specification, version 1.0 (https://dmlc.github.io/dlpack/latest/,
 * the C API and the Python specification), not copied from dlpack.h.  Only
 * what a CPU tensor of bytes needs: the device and data type enumerations
 * have many more values.
 *
 * The layouts are the ABI shared with every consumer (numpy, PyTorch, ...):
 * they must not change.  DLPack declares the device type as an enum; an
 * enum is an int on every ABI we build for, so int32_t here.
 */
#ifndef FBPY_DLPACK_H
#define FBPY_DLPACK_H

#include <stdint.h>

/* The version the versioned structure below has. */
#define FB_DLPACK_MAJOR 1
#define FB_DLPACK_MINOR 0

/* DLDeviceType: host memory. */
#define FB_DL_CPU 1
/* DLDataTypeCode: unsigned integers. */
#define FB_DL_UINT 1

/* DLManagedTensorVersioned.flags: the consumer must not write. */
#define FB_DLPACK_FLAG_READ_ONLY (UINT64_C(1) << 0)

/* The capsule names (the Python specification): a consumer renames the
 * capsule it took the tensor from to the "used_" name, and calls the deleter
 * itself when done; a capsule still of its first name owns the tensor. */
#define FB_DLPACK_CAPSULE "dltensor"
#define FB_DLPACK_CAPSULE_VERSIONED "dltensor_versioned"

struct fb_dl_device {
	int32_t device_type; /* FB_DL_CPU */
	int32_t device_id;
};

struct fb_dl_data_type {
	uint8_t code;   /* FB_DL_UINT */
	uint8_t bits;   /* 8 */
	uint16_t lanes; /* 1 */
};

/* DLTensor.  Shape and strides in elements, row-major first dimension. */
struct fb_dl_tensor {
	void *data;
	struct fb_dl_device device;
	int32_t ndim;
	struct fb_dl_data_type dtype;
	int64_t *shape;
	int64_t *strides; /* NULL: compact row-major */
	uint64_t byte_offset;
};

/* DLManagedTensor: the "dltensor" capsule's pointer (DLPack before 1.0). */
struct fb_dl_managed_tensor {
	struct fb_dl_tensor dl_tensor;
	void *manager_ctx;
	void (*deleter)(struct fb_dl_managed_tensor *self);
};

struct fb_dl_pack_version {
	uint32_t major;
	uint32_t minor;
};

/* DLManagedTensorVersioned: the "dltensor_versioned" capsule's pointer
 * (DLPack 1.0). */
struct fb_dl_managed_tensor_versioned {
	struct fb_dl_pack_version version;
	void *manager_ctx;
	void (*deleter)(struct fb_dl_managed_tensor_versioned *self);
	uint64_t flags;
	struct fb_dl_tensor dl_tensor;
};

#endif
