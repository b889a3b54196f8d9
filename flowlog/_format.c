/*
 * Flow-log lines for a whole batch of events, in one C pass.
 *
 * A batch is an array of struct flow_end (bpf/flow_event.h, the header the tc
 * programs are built from: the record layout is the compiler's, by
 * construction). Every line is the seed's keys in the EKS guide's order, then
 * ours; what is known by id (the local pod, the policy, both ends' identity)
 * and the names of codes come from tables the Python side builds and JSON-escapes
 * (flowlog/format.py), so the only text here is the keys and numbers.
 *
 *   {"level":"info","timestamp":"…","logger":"ebpf-client","msg":"Flow Info: ",
 *    "Src IP":"…","Src Port":…,"Dest IP":"…","Dest Port":…,"Proto":"…","Verdict":"…",
 *    "Direction":"…","Tier":"…","Packet Size":…,"Node":"…"<pod><policy><src><dest>
 *    <flow end: "Start Time","Duration","Packets Sent",…>}
 *
 * A flow end (an EXPIRED/DELETED record with counters) carries its counters
 * instead of the packet size.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "flow_event.h"

#define CODE_NAME_MAX 32
#define CODES 256
/* The longest line without the node, id tables and names: keys, two IPv6
 * addresses, two timestamps and six 20-digit numbers, generously rounded. */
#define FIXED_LINE_MAX 640

enum id_table { ENDPOINTS, POLICIES, SRC_PEERS, DEST_PEERS, ID_TABLES };

typedef struct {
	uint8_t *blob;
	int64_t *offsets; /* count + 1 of them: row i is blob[offsets[i]:offsets[i + 1]] */
	Py_ssize_t count;
	Py_ssize_t longest;
} IdTable;

typedef struct {
	char text[CODE_NAME_MAX];
	uint8_t length;
} CodeName;

typedef struct {
	int64_t second;
	char text[19]; /* 2026-11-22T05:00:00 */
} SecondCache;

typedef struct {
	PyObject_HEAD
	uint8_t *node;
	Py_ssize_t node_length;
	CodeName protocols[CODES], verdicts[CODES], tiers[CODES], directions[2];
	IdTable tables[ID_TABLES];
} Formatter;

#define LITERAL(out, text) (memcpy((out), (text), sizeof(text) - 1), (out) + sizeof(text) - 1)

static uint8_t *put_bytes(uint8_t *out, const void *bytes, size_t length)
{
	memcpy(out, bytes, length);
	return out + length;
}

static uint8_t *put_uint(uint8_t *out, uint64_t value)
{
	char digits[20];
	int count = 0;

	do {
		digits[count++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (count)
		*out++ = (uint8_t)digits[--count];
	return out;
}

static uint8_t *put_three_digits(uint8_t *out, unsigned value)
{
	out[0] = (uint8_t)('0' + value / 100);
	out[1] = (uint8_t)('0' + value / 10 % 10);
	out[2] = (uint8_t)('0' + value % 10);
	return out + 3;
}

/* 2026-11-22T05:00:00.123Z, UTC; the text of a second is kept, as lines come
 * in time order and share their seconds. */
static uint8_t *put_timestamp(uint8_t *out, int64_t epoch_ms, SecondCache *cache)
{
	int64_t second = epoch_ms >= 0 ? epoch_ms / 1000 : (epoch_ms - 999) / 1000;
	unsigned millis = (unsigned)(epoch_ms - second * 1000);

	if (second != cache->second) {
		time_t seconds = (time_t)second;
		struct tm parts;

		gmtime_r(&seconds, &parts);
		strftime(cache->text, sizeof(cache->text) + 1, "%Y-%m-%dT%H:%M:%S", &parts);
		cache->second = second;
	}
	out = put_bytes(out, cache->text, sizeof(cache->text));
	*out++ = '.';
	out = put_three_digits(out, millis);
	*out++ = 'Z';
	return out;
}

static const uint8_t V4_MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static uint8_t *put_address(uint8_t *out, const uint8_t address[16])
{
	if (memcmp(address, V4_MAPPED, sizeof(V4_MAPPED)) == 0) {
		for (int i = 12; i < 16; i++) {
			if (i > 12)
				*out++ = '.';
			out = put_uint(out, address[i]);
		}
		return out;
	}
	char text[INET6_ADDRSTRLEN];
	inet_ntop(AF_INET6, address, text, sizeof(text));
	return put_bytes(out, text, strlen(text));
}

static uint8_t *put_name(uint8_t *out, const CodeName *name)
{
	return put_bytes(out, name->text, name->length);
}

static uint8_t *put_row(uint8_t *out, const IdTable *table, int64_t id)
{
	if (id <= 0 || id >= table->count)
		return out; /* unknown or none: no keys */
	int64_t start = table->offsets[id];
	return put_bytes(out, table->blob + start, (size_t)(table->offsets[id + 1] - start));
}

/* Seconds with milliseconds, rounded: 12.345 */
static uint8_t *put_duration(uint8_t *out, uint64_t nanoseconds)
{
	uint64_t millis = (nanoseconds + 500000) / 1000000;

	out = put_uint(out, millis / 1000);
	*out++ = '.';
	return put_three_digits(out, (unsigned)(millis % 1000));
}

static uint8_t *put_line(const Formatter *self, uint8_t *out, const struct flow_end *record,
			 int64_t epoch_ms, int64_t src_peer, int64_t dest_peer, int64_t offset_ns,
			 SecondCache *seconds, SecondCache *start_seconds)
{
	const struct flow_event *event = &record->flow;
	int flow_end = event->verdict == VERDICT_EXPIRED && record->start_ns != 0;

	out = LITERAL(out, "{\"level\":\"info\",\"timestamp\":\"");
	out = put_timestamp(out, epoch_ms, seconds);
	out = LITERAL(out, "\",\"logger\":\"ebpf-client\",\"msg\":\"Flow Info: \",\"Src IP\":\"");
	out = put_address(out, event->src_ip);
	out = LITERAL(out, "\",\"Src Port\":");
	out = put_uint(out, event->src_port);
	out = LITERAL(out, ",\"Dest IP\":\"");
	out = put_address(out, event->dest_ip);
	out = LITERAL(out, "\",\"Dest Port\":");
	out = put_uint(out, event->dest_port);
	out = LITERAL(out, ",\"Proto\":");
	out = put_name(out, &self->protocols[event->protocol]);
	out = LITERAL(out, ",\"Verdict\":");
	out = put_name(out, &self->verdicts[event->verdict]);
	out = LITERAL(out, ",\"Direction\":");
	out = put_name(out, &self->directions[event->is_egress ? 1 : 0]);
	out = LITERAL(out, ",\"Tier\":");
	out = put_name(out, &self->tiers[event->tier]);
	if (!flow_end) {
		out = LITERAL(out, ",\"Packet Size\":");
		out = put_uint(out, event->packet_size);
	}
	out = put_bytes(out, self->node, (size_t)self->node_length);
	out = put_row(out, &self->tables[ENDPOINTS], event->endpoint_id);
	out = put_row(out, &self->tables[POLICIES], event->policy_id);
	out = put_row(out, &self->tables[SRC_PEERS], src_peer);
	out = put_row(out, &self->tables[DEST_PEERS], dest_peer);
	if (flow_end) {
		int64_t start_ms = ((int64_t)record->start_ns + offset_ns) / 1000000;
		uint64_t active = record->last_ns > record->start_ns
					  ? record->last_ns - record->start_ns
					  : 0;

		out = LITERAL(out, ",\"Start Time\":\"");
		out = put_timestamp(out, start_ms, start_seconds);
		out = LITERAL(out, "\",\"Duration\":");
		out = put_duration(out, active);
		out = LITERAL(out, ",\"Packets Sent\":");
		out = put_uint(out, record->packets_sent);
		out = LITERAL(out, ",\"Bytes Sent\":");
		out = put_uint(out, record->bytes_sent);
		out = LITERAL(out, ",\"Packets Received\":");
		out = put_uint(out, record->packets_received);
		out = LITERAL(out, ",\"Bytes Received\":");
		out = put_uint(out, record->bytes_received);
	}
	return LITERAL(out, "}\n");
}

/* --- configuration from Python ----------------------------------------------- */

static int read_code_names(PyObject *names, CodeName *out, Py_ssize_t expected, const char *what)
{
	PyObject *sequence = PySequence_Fast(names, what);

	if (!sequence)
		return -1;
	if (PySequence_Fast_GET_SIZE(sequence) != expected) {
		PyErr_Format(PyExc_ValueError, "%s: expected %zd names", what, expected);
		Py_DECREF(sequence);
		return -1;
	}
	for (Py_ssize_t i = 0; i < expected; i++) {
		char *text;
		Py_ssize_t length;

		if (PyBytes_AsStringAndSize(PySequence_Fast_GET_ITEM(sequence, i), &text, &length) <
		    0) {
			Py_DECREF(sequence);
			return -1;
		}
		if (length >= CODE_NAME_MAX) {
			PyErr_Format(PyExc_ValueError, "%s: a name is longer than %d bytes", what,
				     CODE_NAME_MAX - 1);
			Py_DECREF(sequence);
			return -1;
		}
		memcpy(out[i].text, text, (size_t)length);
		out[i].length = (uint8_t)length;
	}
	Py_DECREF(sequence);
	return 0;
}

static int formatter_init(Formatter *self, PyObject *args, PyObject *kwargs)
{
	static char *keywords[] = {"node", "protocols", "verdicts", "directions", "tiers", NULL};
	const char *node;
	Py_ssize_t node_length;
	PyObject *protocols, *verdicts, *directions, *tiers;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y#OOOO", keywords, &node, &node_length,
					 &protocols, &verdicts, &directions, &tiers))
		return -1;
	if (read_code_names(protocols, self->protocols, CODES, "protocols") < 0 ||
	    read_code_names(verdicts, self->verdicts, CODES, "verdicts") < 0 ||
	    read_code_names(directions, self->directions, 2, "directions") < 0 ||
	    read_code_names(tiers, self->tiers, CODES, "tiers") < 0)
		return -1;
	PyMem_Free(self->node);
	self->node = PyMem_Malloc((size_t)node_length + 1);
	if (!self->node) {
		PyErr_NoMemory();
		return -1;
	}
	memcpy(self->node, node, (size_t)node_length);
	self->node_length = node_length;
	return 0;
}

static void free_table(IdTable *table)
{
	PyMem_Free(table->blob);
	PyMem_Free(table->offsets);
	memset(table, 0, sizeof(*table));
}

static void formatter_dealloc(Formatter *self)
{
	PyMem_Free(self->node);
	for (int i = 0; i < ID_TABLES; i++)
		free_table(&self->tables[i]);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(set_rows_doc,
"set_rows(table, rows)\n\n"
"The text each id stands for in one id table (0 endpoints, 1 policies,\n"
"2 source peers, 3 destination peers): ``rows[i]`` (bytes) is written for id i;\n"
"ids past the end, and 0, write nothing.");

static PyObject *set_rows(Formatter *self, PyObject *args)
{
	int which;
	PyObject *rows, *sequence;

	if (!PyArg_ParseTuple(args, "iO", &which, &rows))
		return NULL;
	if (which < 0 || which >= ID_TABLES) {
		PyErr_SetString(PyExc_ValueError, "table: expected 0-3");
		return NULL;
	}
	sequence = PySequence_Fast(rows, "rows: expected a sequence of bytes");
	if (!sequence)
		return NULL;
	Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence), total = 0, longest = 0;
	for (Py_ssize_t i = 0; i < count; i++) {
		PyObject *row = PySequence_Fast_GET_ITEM(sequence, i);
		if (!PyBytes_Check(row)) {
			Py_DECREF(sequence);
			PyErr_SetString(PyExc_TypeError, "rows: expected bytes");
			return NULL;
		}
		total += PyBytes_GET_SIZE(row);
		if (PyBytes_GET_SIZE(row) > longest)
			longest = PyBytes_GET_SIZE(row);
	}
	IdTable table = {
		.blob = PyMem_Malloc((size_t)total + 1),
		.offsets = PyMem_Malloc(sizeof(int64_t) * ((size_t)count + 1)),
		.count = count,
		.longest = longest,
	};
	if (!table.blob || !table.offsets) {
		free_table(&table);
		Py_DECREF(sequence);
		return PyErr_NoMemory();
	}
	int64_t offset = 0;
	for (Py_ssize_t i = 0; i < count; i++) {
		PyObject *row = PySequence_Fast_GET_ITEM(sequence, i);
		table.offsets[i] = offset;
		memcpy(table.blob + offset, PyBytes_AS_STRING(row), (size_t)PyBytes_GET_SIZE(row));
		offset += PyBytes_GET_SIZE(row);
	}
	table.offsets[count] = offset;
	Py_DECREF(sequence);
	free_table(&self->tables[which]);
	self->tables[which] = table;
	Py_RETURN_NONE;
}

static Py_ssize_t line_bound(const Formatter *self)
{
	/* four code names: protocol, verdict, direction, tier */
	Py_ssize_t bound = FIXED_LINE_MAX + self->node_length + 4 * CODE_NAME_MAX;

	for (int i = 0; i < ID_TABLES; i++)
		bound += self->tables[i].longest;
	return bound;
}

PyDoc_STRVAR(line_bound_doc, "line_bound() -> the most bytes one line can take now");

static PyObject *line_bound_method(Formatter *self, PyObject *unused)
{
	(void)unused;
	return PyLong_FromSsize_t(line_bound(self));
}

/* --- the batch ---------------------------------------------------------------- */

static int get_buffer(PyObject *object, Py_buffer *view, int flags, Py_ssize_t item_size,
		      Py_ssize_t count, const char *what)
{
	if (PyObject_GetBuffer(object, view, flags | PyBUF_C_CONTIGUOUS) < 0)
		return -1;
	if (view->len != item_size * count) {
		PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", what,
			     item_size * count, view->len);
		PyBuffer_Release(view);
		return -1;
	}
	return 0;
}

PyDoc_STRVAR(format_doc,
"format(records, epoch_ms, src_peers, dest_peers, offset_ns, out, first) -> (bytes, next)\n\n"
"Write the lines of ``records`` (a contiguous array of struct flow_end) from\n"
"index ``first`` into ``out`` (writable, at least line_bound() bytes), as many\n"
"as surely fit; returns the bytes written and the index of the next record.\n"
"``epoch_ms`` (int64) is each line's timestamp; ``src_peers`` and\n"
"``dest_peers`` (int32) are each end's row in the peer tables, or None;\n"
"``offset_ns`` turns the records' CLOCK_MONOTONIC start times into wall-clock\n"
"time.");

static PyObject *format(Formatter *self, PyObject *args)
{
	PyObject *records_object, *epoch_object, *src_object, *dest_object, *out_object;
	long long offset_ns;
	Py_ssize_t first;
	Py_buffer records, epoch, src = {0}, dest = {0}, out;

	if (!PyArg_ParseTuple(args, "OOOOLOn", &records_object, &epoch_object, &src_object,
			      &dest_object, &offset_ns, &out_object, &first))
		return NULL;
	if (PyObject_GetBuffer(records_object, &records, PyBUF_C_CONTIGUOUS) < 0)
		return NULL;
	Py_ssize_t count = records.len / (Py_ssize_t)sizeof(struct flow_end);
	if (records.len % (Py_ssize_t)sizeof(struct flow_end)) {
		PyBuffer_Release(&records);
		PyErr_Format(PyExc_ValueError, "records: not a whole number of %zu-byte records",
			     sizeof(struct flow_end));
		return NULL;
	}
	if (get_buffer(epoch_object, &epoch, 0, sizeof(int64_t), count, "epoch_ms") < 0) {
		PyBuffer_Release(&records);
		return NULL;
	}
	int failed = 0;
	if (src_object != Py_None)
		failed = get_buffer(src_object, &src, 0, sizeof(int32_t), count, "src_peers") < 0;
	if (!failed && dest_object != Py_None)
		failed = get_buffer(dest_object, &dest, 0, sizeof(int32_t), count, "dest_peers") < 0;
	if (!failed)
		failed = PyObject_GetBuffer(out_object, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0;
	Py_ssize_t bound = line_bound(self);
	if (!failed && (out.len < bound || first < 0 || first > count)) {
		PyErr_SetString(PyExc_ValueError, "out: smaller than line_bound(), or first out of range");
		PyBuffer_Release(&out);
		failed = 1;
	}
	if (failed) {
		if (src.obj)
			PyBuffer_Release(&src);
		if (dest.obj)
			PyBuffer_Release(&dest);
		PyBuffer_Release(&epoch);
		PyBuffer_Release(&records);
		return NULL;
	}

	const struct flow_end *events = records.buf;
	const int64_t *epoch_ms = epoch.buf;
	const int32_t *src_peers = src.obj ? src.buf : NULL;
	const int32_t *dest_peers = dest.obj ? dest.buf : NULL;
	uint8_t *start = out.buf, *cursor = start, *last = start + out.len - bound;
	SecondCache seconds = {.second = INT64_MIN}, start_seconds = {.second = INT64_MIN};
	Py_ssize_t i = first;

	Py_BEGIN_ALLOW_THREADS
	for (; i < count && cursor <= last; i++)
		cursor = put_line(self, cursor, &events[i], epoch_ms[i],
				  src_peers ? src_peers[i] : 0, dest_peers ? dest_peers[i] : 0,
				  offset_ns, &seconds, &start_seconds);
	Py_END_ALLOW_THREADS

	PyBuffer_Release(&out);
	if (src.obj)
		PyBuffer_Release(&src);
	if (dest.obj)
		PyBuffer_Release(&dest);
	PyBuffer_Release(&epoch);
	PyBuffer_Release(&records);
	return Py_BuildValue("nn", (Py_ssize_t)(cursor - start), i);
}

static PyMethodDef formatter_methods[] = {
	{"set_rows", (PyCFunction)set_rows, METH_VARARGS, set_rows_doc},
	{"line_bound", (PyCFunction)line_bound_method, METH_NOARGS, line_bound_doc},
	{"format", (PyCFunction)format, METH_VARARGS, format_doc},
	{NULL, NULL, 0, NULL},
};

static PyTypeObject FormatterType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "flowlog._format.Formatter",
	.tp_doc = "Flow-log lines of batches of struct flow_end records.",
	.tp_basicsize = sizeof(Formatter),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)formatter_init,
	.tp_dealloc = (destructor)formatter_dealloc,
	.tp_methods = formatter_methods,
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "flowlog._format",
	"Flow-log lines for whole batches of events, in one C pass.", -1, NULL,
};

PyMODINIT_FUNC PyInit__format(void)
{
	if (PyType_Ready(&FormatterType) < 0)
		return NULL;
	PyObject *m = PyModule_Create(&module);
	if (!m)
		return NULL;
	Py_INCREF(&FormatterType);
	if (PyModule_AddObject(m, "Formatter", (PyObject *)&FormatterType) < 0 ||
	    PyModule_AddIntConstant(m, "RECORD_SIZE", sizeof(struct flow_end)) < 0 ||
	    PyModule_AddIntConstant(m, "ENDPOINTS", ENDPOINTS) < 0 ||
	    PyModule_AddIntConstant(m, "POLICIES", POLICIES) < 0 ||
	    PyModule_AddIntConstant(m, "SRC_PEERS", SRC_PEERS) < 0 ||
	    PyModule_AddIntConstant(m, "DEST_PEERS", DEST_PEERS) < 0) {
		Py_DECREF(&FormatterType);
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
