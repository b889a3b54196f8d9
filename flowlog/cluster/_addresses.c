/*
 * Who held an address when: the lookup behind naming both ends of every flow.
 *
 * An AddressMap maps a 16-byte address (IPv4 as ::ffff:a.b.c.d) to up to two
 * leases, the current holder and the one before it, each an id valid over
 * [from_ms, until_ms). Pod IPs are reused, so an event is named by the lease
 * that covers its own time: one still waiting in the ring buffer when its pod
 * was replaced is still named by that pod. The Python side
 * (flowlog/cluster/peers.py) decides the leases; this is the per-event part,
 * both ends of a whole batch in one pass: open addressing with linear probing,
 * a table at most half full.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MIN_CAPACITY 64

typedef struct {
	int32_t id;
	int64_t from_ms, until_ms;
} Lease;

typedef struct {
	uint64_t words[2]; /* the address as stored in memory */
	uint8_t used;
	Lease current, previous;
} Slot;

typedef struct {
	PyObject_HEAD
	Slot *slots;
	Py_ssize_t capacity; /* a power of two */
	Py_ssize_t count;
} AddressMap;

static uint64_t hash_address(const uint64_t words[2])
{
	uint64_t h = words[0] * 0x9E3779B97F4A7C15ull ^ words[1] * 0xC2B2AE3D27D4EB4Full;
	return h ^ (h >> 29);
}

static Py_ssize_t find(const AddressMap *self, const uint64_t words[2])
{
	Py_ssize_t mask = self->capacity - 1;
	Py_ssize_t i = (Py_ssize_t)(hash_address(words) & (uint64_t)mask);

	while (self->slots[i].used) {
		if (self->slots[i].words[0] == words[0] && self->slots[i].words[1] == words[1])
			return i;
		i = (i + 1) & mask;
	}
	return -1 - i; /* where it would go */
}

static int grow(AddressMap *self)
{
	Py_ssize_t capacity = self->capacity ? self->capacity * 2 : MIN_CAPACITY;
	Slot *old = self->slots;
	Py_ssize_t old_capacity = self->capacity;
	Slot *slots = PyMem_Calloc((size_t)capacity, sizeof(Slot));

	if (!slots) {
		PyErr_NoMemory();
		return -1;
	}
	self->slots = slots;
	self->capacity = capacity;
	for (Py_ssize_t i = 0; i < old_capacity; i++) {
		if (old[i].used)
			self->slots[-1 - find(self, old[i].words)] = old[i];
	}
	PyMem_Free(old);
	return 0;
}

static int read_address(PyObject *object, uint64_t words[2])
{
	char *bytes;
	Py_ssize_t length;

	if (PyBytes_AsStringAndSize(object, &bytes, &length) < 0)
		return -1;
	if (length != 16) {
		PyErr_SetString(PyExc_ValueError, "address: expected 16 bytes");
		return -1;
	}
	memcpy(words, bytes, 16);
	return 0;
}

PyDoc_STRVAR(set_doc,
"set(address, current, previous)\n\n"
"The leases of ``address`` (16 bytes): each an (id, from_ms, until_ms) tuple,\n"
"``previous`` possibly None.");

static int read_lease(PyObject *object, Lease *lease)
{
	long long from_ms, until_ms;
	int id;

	if (object == Py_None) {
		*lease = (Lease){0, 0, 0};
		return 0;
	}
	if (!PyArg_ParseTuple(object, "iLL", &id, &from_ms, &until_ms))
		return -1;
	*lease = (Lease){id, from_ms, until_ms};
	return 0;
}

static PyObject *set(AddressMap *self, PyObject *args)
{
	PyObject *address, *current, *previous;
	uint64_t words[2];
	Lease leases[2];

	if (!PyArg_ParseTuple(args, "OOO", &address, &current, &previous) ||
	    read_address(address, words) < 0 || read_lease(current, &leases[0]) < 0 ||
	    read_lease(previous, &leases[1]) < 0)
		return NULL;
	if ((self->count + 1) * 2 > self->capacity && grow(self) < 0)
		return NULL;
	Py_ssize_t i = find(self, words);
	if (i < 0) {
		i = -1 - i;
		self->slots[i].used = 1;
		memcpy(self->slots[i].words, words, 16);
		self->count++;
	}
	self->slots[i].current = leases[0];
	self->slots[i].previous = leases[1];
	Py_RETURN_NONE;
}

PyDoc_STRVAR(discard_doc, "discard(address): forget ``address`` and its leases");

static PyObject *discard(AddressMap *self, PyObject *address)
{
	uint64_t words[2];

	if (read_address(address, words) < 0)
		return NULL;
	if (!self->capacity)
		Py_RETURN_NONE;
	Py_ssize_t i = find(self, words);
	if (i < 0)
		Py_RETURN_NONE;
	/* Backward-shift deletion keeps every probe sequence unbroken. */
	Py_ssize_t mask = self->capacity - 1, hole = i, j = i;
	self->slots[hole].used = 0;
	for (;;) {
		j = (j + 1) & mask;
		if (!self->slots[j].used)
			break;
		Py_ssize_t home = (Py_ssize_t)(hash_address(self->slots[j].words) & (uint64_t)mask);
		/* Move j into the hole unless its home lies cyclically in (hole, j]. */
		int stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
		if (!stays) {
			self->slots[hole] = self->slots[j];
			self->slots[j].used = 0;
			hole = j;
		}
	}
	self->count--;
	Py_RETURN_NONE;
}

static int32_t lookup(const AddressMap *self, const uint8_t *address, int64_t at_ms)
{
	uint64_t words[2];

	if (!self->count)
		return 0;
	memcpy(words, address, 16);
	Py_ssize_t i = find(self, words);
	if (i < 0)
		return 0;
	const Slot *slot = &self->slots[i];
	if (slot->current.from_ms <= at_ms && at_ms < slot->current.until_ms)
		return slot->current.id;
	if (slot->previous.from_ms <= at_ms && at_ms < slot->previous.until_ms)
		return slot->previous.id;
	return 0;
}

PyDoc_STRVAR(resolve_doc,
"resolve(records, src_offset, dest_offset, epoch_ms, src_ids, dest_ids)\n\n"
"For each record of ``records`` (a contiguous array; its addresses at byte\n"
"offsets ``src_offset`` and ``dest_offset``), the id whose lease covers the\n"
"record's ``epoch_ms`` (int64), into ``src_ids`` and ``dest_ids`` (int32); 0\n"
"where none does.");

static PyObject *resolve(AddressMap *self, PyObject *args)
{
	PyObject *records_object, *epoch_object, *src_object, *dest_object;
	Py_ssize_t src_offset, dest_offset;
	Py_buffer records, epoch, src, dest;

	if (!PyArg_ParseTuple(args, "OnnOOO", &records_object, &src_offset, &dest_offset,
			      &epoch_object, &src_object, &dest_object))
		return NULL;
	if (PyObject_GetBuffer(records_object, &records, PyBUF_C_CONTIGUOUS | PyBUF_ND) < 0)
		return NULL;
	if (PyObject_GetBuffer(epoch_object, &epoch, PyBUF_C_CONTIGUOUS) < 0) {
		PyBuffer_Release(&records);
		return NULL;
	}
	if (PyObject_GetBuffer(src_object, &src, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
		PyBuffer_Release(&epoch);
		PyBuffer_Release(&records);
		return NULL;
	}
	if (PyObject_GetBuffer(dest_object, &dest, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
		PyBuffer_Release(&src);
		PyBuffer_Release(&epoch);
		PyBuffer_Release(&records);
		return NULL;
	}
	Py_ssize_t count = epoch.len / (Py_ssize_t)sizeof(int64_t);
	Py_ssize_t stride = count ? records.len / count : 0;
	int valid = records.len == stride * count && src.len == count * 4 && dest.len == count * 4 &&
		    src_offset >= 0 && dest_offset >= 0 && src_offset + 16 <= stride &&
		    dest_offset + 16 <= stride;
	if (valid || !count) {
		const uint8_t *base = records.buf;
		const int64_t *at = epoch.buf;
		int32_t *src_ids = src.buf, *dest_ids = dest.buf;

		for (Py_ssize_t i = 0; i < count; i++) {
			src_ids[i] = lookup(self, base + i * stride + src_offset, at[i]);
			dest_ids[i] = lookup(self, base + i * stride + dest_offset, at[i]);
		}
	}
	PyBuffer_Release(&dest);
	PyBuffer_Release(&src);
	PyBuffer_Release(&epoch);
	PyBuffer_Release(&records);
	if (!valid && count) {
		PyErr_SetString(PyExc_ValueError, "resolve: the arrays do not fit together");
		return NULL;
	}
	Py_RETURN_NONE;
}

static Py_ssize_t map_length(AddressMap *self) { return self->count; }

static void map_dealloc(AddressMap *self)
{
	PyMem_Free(self->slots);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef map_methods[] = {
	{"set", (PyCFunction)set, METH_VARARGS, set_doc},
	{"discard", (PyCFunction)discard, METH_O, discard_doc},
	{"resolve", (PyCFunction)resolve, METH_VARARGS, resolve_doc},
	{NULL, NULL, 0, NULL},
};

static PySequenceMethods map_as_sequence = {.sq_length = (lenfunc)map_length};

static PyTypeObject AddressMapType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "flowlog.cluster._addresses.AddressMap",
	.tp_doc = "Addresses to the ids that held them, by time.",
	.tp_basicsize = sizeof(AddressMap),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = PyType_GenericNew,
	.tp_dealloc = (destructor)map_dealloc,
	.tp_methods = map_methods,
	.tp_as_sequence = &map_as_sequence,
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "flowlog.cluster._addresses",
	"Who held an address when, for whole batches of events.", -1, NULL,
};

PyMODINIT_FUNC PyInit__addresses(void)
{
	if (PyType_Ready(&AddressMapType) < 0)
		return NULL;
	PyObject *m = PyModule_Create(&module);
	if (!m)
		return NULL;
	Py_INCREF(&AddressMapType);
	if (PyModule_AddObject(m, "AddressMap", (PyObject *)&AddressMapType) < 0) {
		Py_DECREF(&AddressMapType);
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
