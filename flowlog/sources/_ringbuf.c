/*
 * Copying records out of a BPF ring buffer, in one C pass.
 *
 * A ring buffer record is an 8-byte header (length, BUSY and DISCARD bits)
 * then the record, padded to 8 bytes. Our programs write records of two
 * lengths (a verdict and a longer flow end), so a run of them is not one
 * strided array; this walks the headers and copies each record into a slot of
 * a fixed-size array the pipeline works on, zero-filling the rest of the slot.
 * Python would need a loop per record for that. The data area is mapped once,
 * so a record may cross its end: it is copied in two pieces.
 *
 * Memory order: the producer position and each header are read with acquire
 * semantics, as libbpf's ring_buffer__consume does; the caller publishes the
 * new consumer position only after this returns.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEADER_SIZE 8
#define BUSY_BIT (1u << 31)
#define DISCARD_BIT (1u << 30)
#define MAX_SIZES 4

static uint64_t round_up8(uint64_t value) { return (value + 7) & ~(uint64_t)7; }

static void copy_out(const uint8_t *data, uint64_t mask, uint64_t position, uint8_t *out,
		     uint64_t length)
{
	uint64_t start = position & mask;
	uint64_t first = mask + 1 - start;

	if (first >= length) {
		memcpy(out, data + start, length);
	} else {
		memcpy(out, data + start, first);
		memcpy(out + first, data, length - first);
	}
}

PyDoc_STRVAR(drain_doc,
"drain(data, consumer, producer, out, sizes) -> (copied, consumer, skipped, skipped_size)\n\n"
"Copy the committed records between the consumer and producer positions of the\n"
"ring buffer data area ``data`` (a power-of-two length) into ``out``, a writable\n"
"contiguous array of records (one item each), while there is room. Only records\n"
"whose length is in ``sizes`` are copied; others are skipped and counted, with\n"
"the length of the last one skipped. Stops at a record still being written.\n"
"With ``out`` None it only counts. Returns the records copied, the consumer\n"
"position after everything read, and the skipped count and length.");

static PyObject *drain(PyObject *module, PyObject *args)
{
	Py_buffer data, out = {0};
	unsigned long long consumer, producer;
	PyObject *out_object, *sizes_object;
	uint64_t sizes[MAX_SIZES];
	Py_ssize_t size_count;

	(void)module;
	if (!PyArg_ParseTuple(args, "y*KKOO", &data, &consumer, &producer, &out_object,
			      &sizes_object))
		return NULL;
	size_count = PySequence_Size(sizes_object);
	if (size_count < 0 || size_count > MAX_SIZES) {
		PyBuffer_Release(&data);
		PyErr_SetString(PyExc_ValueError, "sizes: expected at most 4 record lengths");
		return NULL;
	}
	for (Py_ssize_t i = 0; i < size_count; i++) {
		PyObject *item = PySequence_GetItem(sizes_object, i);
		sizes[i] = item ? PyLong_AsUnsignedLongLong(item) : 0;
		Py_XDECREF(item);
		if (PyErr_Occurred()) {
			PyBuffer_Release(&data);
			return NULL;
		}
	}
	uint64_t data_size = (uint64_t)data.len;
	if (data_size == 0 || (data_size & (data_size - 1))) {
		PyBuffer_Release(&data);
		PyErr_SetString(PyExc_ValueError, "data: the length must be a power of two");
		return NULL;
	}
	uint8_t *slots = NULL;
	uint64_t stride = 0, capacity = UINT64_MAX;
	if (out_object != Py_None) {
		if (PyObject_GetBuffer(out_object, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
			PyBuffer_Release(&data);
			return NULL;
		}
		stride = (uint64_t)out.itemsize;
		capacity = out.itemsize ? (uint64_t)out.len / stride : 0;
		slots = out.buf;
		for (Py_ssize_t i = 0; i < size_count; i++) {
			if (sizes[i] > stride) {
				PyBuffer_Release(&out);
				PyBuffer_Release(&data);
				PyErr_SetString(PyExc_ValueError, "sizes: a record is longer than a slot");
				return NULL;
			}
		}
	}
	const uint8_t *ring = data.buf;
	uint64_t mask = data_size - 1, position = consumer, copied = 0, skipped = 0;
	uint64_t skipped_size = 0;

	Py_BEGIN_ALLOW_THREADS
	while (position < producer && copied < capacity) {
		/* Headers are 8-byte aligned: one never crosses the end. */
		uint32_t header = __atomic_load_n((const uint32_t *)(ring + (position & mask)),
						  __ATOMIC_ACQUIRE);
		if (header & BUSY_BIT)
			break;
		uint64_t length = header & ~(BUSY_BIT | DISCARD_BIT);
		if (!(header & DISCARD_BIT)) {
			int wanted = 0;
			for (Py_ssize_t i = 0; i < size_count; i++)
				wanted |= sizes[i] == length;
			if (!wanted) {
				skipped++;
				skipped_size = length;
			} else {
				if (slots) {
					uint8_t *slot = slots + copied * stride;
					copy_out(ring, mask, position + HEADER_SIZE, slot, length);
					memset(slot + length, 0, stride - length);
				}
				copied++;
			}
		}
		position += round_up8(HEADER_SIZE + length);
	}
	Py_END_ALLOW_THREADS

	if (slots)
		PyBuffer_Release(&out);
	PyBuffer_Release(&data);
	return Py_BuildValue("KKKK", (unsigned long long)copied, (unsigned long long)position,
			     (unsigned long long)skipped, (unsigned long long)skipped_size);
}

static PyMethodDef methods[] = {
	{"drain", drain, METH_VARARGS, drain_doc},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "flowlog.sources._ringbuf",
	"Copying records out of a BPF ring buffer in one C pass.", -1, methods,
};

PyMODINIT_FUNC PyInit__ringbuf(void) { return PyModule_Create(&module); }
