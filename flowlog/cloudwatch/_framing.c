/*
 * The passes over flow-log bytes that make PutLogEvents request bodies.
 *
 *   line_ends(data) -> bytearray of int64: where each newline is
 *   line_times(...): the epoch milliseconds in each flow-log line's timestamp
 *   frame_events(head, parts) -> bytes: a whole request body
 *
 * frame_events writes ``head`` (the request up to its event array), then every
 * event of every part as {"timestamp":T,"message":"<the line, escaped>"},
 * comma-separated, then "]}". A part is (messages, starts, lengths,
 * timestamps): the bytes of a block of lines and, per event, where its line
 * starts, how long it is, and its time (int64 buffers, one element per event).
 * Lines are valid UTF-8 without their newline; the builder sees to that.
 *
 * Escaping follows JSON (RFC 8259): quote and backslash get a backslash,
 * control characters become \b \t \f \r or \u00XX. Everything else, DEL and
 * multi-byte UTF-8 included, is copied as it is, as orjson does.
 *
 * orjson's escaping of a flow-log line costs about 0.3 us (one byte in seven is
 * a quote); with SSSE3 shuffles this costs about 0.07 us, and about 0.25 us
 * where only the scalar loop runs (CPUs other than x86-64). Writing the body
 * in one pass, rather than escaping blocks and joining runs of them, saves a
 * copy of every byte sent.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <tmmintrin.h>
#endif

#define MAX_DIGITS 20 /* an unsigned 64-bit number */
#define VECTOR_BYTES 16 /* what the vector path may write past the end */

/* What escaping does to each byte: copied as it is, copied after a backslash,
 * or (rare) special: a control character. */
enum { PLAIN = 0, BACKSLASHED = 1, SPECIAL = 2 };
static uint8_t kind[256];

static const char DIGIT_PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Two digits per division: the timestamp is most of a short event's fixed cost. */
static char *write_decimal(char *out, uint64_t value)
{
    char digits[MAX_DIGITS];
    char *first = digits + MAX_DIGITS;
    while (value >= 100) {
        uint64_t rest = value / 100;
        first -= 2;
        memcpy(first, DIGIT_PAIRS + 2 * (value - rest * 100), 2);
        value = rest;
    }
    if (value >= 10) {
        first -= 2;
        memcpy(first, DIGIT_PAIRS + 2 * value, 2);
    } else {
        *--first = (char)('0' + value);
    }
    size_t width = (size_t)(digits + MAX_DIGITS - first);
    memcpy(out, first, width);
    return out + width;
}

static char *write_control(char *out, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    *out++ = '\\';
    switch (c) {
    case '\b': *out++ = 'b'; break;
    case '\t': *out++ = 't'; break;
    case '\f': *out++ = 'f'; break;
    case '\r': *out++ = 'r'; break;
    default:
        memcpy(out, "u00", 3);
        out[3] = hex[c >> 4];
        out[4] = hex[c & 0xf];
        out += 5;
    }
    return out;
}

/* Escape [p, end), a line without its newline. */
static char *escape_scalar(const unsigned char *p, const unsigned char *end, char *out)
{
    for (; p < end; p++) {
        unsigned char c = *p;
        size_t backslash = kind[c];
        if (backslash == SPECIAL) {
            out = write_control(out, c);
            continue;
        }
        /* Without a branch: a plain byte overwrites the backslash. */
        out[0] = '\\';
        out[backslash] = (char)c;
        out += backslash + 1;
    }
    return out;
}

#if defined(__x86_64__)
/* Flow-log lines are JSON, so about one byte in seven is a quote: a branch per
 * byte is slow. Sixteen bytes at a time, each half of eight is spread out by a
 * shuffle from a table indexed by which of its bytes need a backslash, and the
 * backslashes are or-ed in. Writes up to VECTOR_BYTES past what it returns. */
static uint8_t spread_shuffles[256][16];
static uint8_t spread_backslashes[256][16];
static uint8_t spread_widths[256];

static void init_vector_tables(void)
{
    for (int mask = 0; mask < 256; mask++) {
        int out = 0;
        for (int i = 0; i < 8; i++) {
            if (mask >> i & 1) {
                spread_shuffles[mask][out] = 0x80; /* a zero byte ... */
                spread_backslashes[mask][out++] = '\\'; /* ... or-ed with a backslash */
            }
            spread_shuffles[mask][out++] = (uint8_t)i;
        }
        spread_widths[mask] = (uint8_t)out;
        for (; out < 16; out++)
            spread_shuffles[mask][out] = 0x80;
    }
}

__attribute__((target("ssse3"))) static inline char *spread_half(__m128i bytes, unsigned mask,
                                                                 char *out)
{
    __m128i shuffle = _mm_loadu_si128((const __m128i *)spread_shuffles[mask]);
    __m128i backslashes = _mm_loadu_si128((const __m128i *)spread_backslashes[mask]);
    _mm_storeu_si128((__m128i *)out, _mm_or_si128(_mm_shuffle_epi8(bytes, shuffle), backslashes));
    return out + spread_widths[mask];
}

__attribute__((target("ssse3"))) static char *escape_ssse3(const unsigned char *p,
                                                         const unsigned char *end, char *out)
{
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i backslash = _mm_set1_epi8('\\');
    const __m128i sign = _mm_set1_epi8((char)0x80);
    const __m128i control_limit = _mm_set1_epi8((char)(0x20 ^ 0x80)); /* unsigned < 0x20 */
    while (end - p >= 16) {
        __m128i bytes = _mm_loadu_si128((const __m128i *)p);
        __m128i control = _mm_cmplt_epi8(_mm_xor_si128(bytes, sign), control_limit);
        if (_mm_movemask_epi8(control)) {
            out = escape_scalar(p, p + 16, out);
        } else {
            __m128i escaped =
                _mm_or_si128(_mm_cmpeq_epi8(bytes, quote), _mm_cmpeq_epi8(bytes, backslash));
            unsigned mask = (unsigned)_mm_movemask_epi8(escaped);
            out = spread_half(bytes, mask & 0xff, out);
            out = spread_half(_mm_srli_si128(bytes, 8), mask >> 8, out);
        }
        p += 16;
    }
    return escape_scalar(p, end, out);
}
#endif

typedef char *(*escape_fn)(const unsigned char *, const unsigned char *, char *);
static escape_fn escape_line = escape_scalar;

static void init_tables(void)
{
    for (int c = 0; c < 0x20; c++)
        kind[c] = SPECIAL;
    kind['"'] = kind['\\'] = BACKSLASHED;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("ssse3")) {
        init_vector_tables();
        escape_line = escape_ssse3;
    }
#endif
}

static int check_int64_buffer(Py_buffer *buffer, Py_ssize_t count, const char *name)
{
    if (buffer->itemsize != 8 || buffer->len != count * 8) {
        PyErr_Format(PyExc_ValueError, "%s must hold %zd int64s", name, count);
        return -1;
    }
    return 0;
}

/* Line ends ---------------------------------------------------------------- */

/* memchr skips the bytes between newlines many at a time: a flow-log line is
 * about 330 bytes, so this costs a few microseconds per megabyte. */
static PyObject *line_ends(PyObject *module, PyObject *arg)
{
    Py_buffer data;

    (void)module;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t capacity = data.len / 128 + 16;
    PyObject *result = PyByteArray_FromStringAndSize(NULL, capacity * 8);
    if (result == NULL)
        goto done;
    const char *start = data.buf, *p = start, *end = start + data.len;
    Py_ssize_t count = 0;
    const char *newline;
    while ((newline = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (count == capacity) {
            capacity *= 2;
            if (PyByteArray_Resize(result, capacity * 8) < 0) {
                Py_CLEAR(result);
                goto done;
            }
        }
        ((int64_t *)PyByteArray_AS_STRING(result))[count++] = newline - start;
        p = newline + 1;
    }
    if (PyByteArray_Resize(result, count * 8) < 0)
        Py_CLEAR(result);

done:
    PyBuffer_Release(&data);
    return result;
}

/* Request bodies ----------------------------------------------------------- */

static const char EVENT_OPEN[] = "{\"timestamp\":";
static const char EVENT_MESSAGE[] = ",\"message\":\"";
static const char EVENT_CLOSE[] = "\"}";
static const char BODY_CLOSE[] = "]}";
#define LITERAL_LEN(text) (sizeof(text) - 1)
#define EVENT_FRAME_LEN                                                                   \
    (1 + LITERAL_LEN(EVENT_OPEN) + MAX_DIGITS + LITERAL_LEN(EVENT_MESSAGE) +            \
     LITERAL_LEN(EVENT_CLOSE))

/* The most one event can take: every byte a six-byte escape, and its frame. */
static size_t event_bound(size_t length)
{
    return 6 * length + EVENT_FRAME_LEN + VECTOR_BYTES;
}

/* A body under construction: a bytes object grown when an event might not fit
 * (rarely: flow-log lines grow by about a sixth) and cut to size at the end. */
typedef struct {
    PyObject *bytes;
    size_t capacity;
    size_t used;
} Body;

static int body_reserve(Body *body, size_t needed)
{
    if (body->capacity - body->used >= needed)
        return 0;
    size_t capacity = 2 * body->capacity + needed;
    if (_PyBytes_Resize(&body->bytes, (Py_ssize_t)capacity) < 0)
        return -1;
    body->capacity = capacity;
    return 0;
}

typedef struct {
    Py_buffer messages, starts, lengths, timestamps;
    int held;
} Part;

static void release_part(Part *part)
{
    if (part->held) {
        PyBuffer_Release(&part->messages);
        PyBuffer_Release(&part->starts);
        PyBuffer_Release(&part->lengths);
        PyBuffer_Release(&part->timestamps);
        part->held = 0;
    }
}

/* Check one part: four buffers that agree, events that lie inside the messages. */
static int hold_part(PyObject *item, Part *part)
{
    if (!PyArg_ParseTuple(item, "y*y*y*y*:part", &part->messages, &part->starts,
                          &part->lengths, &part->timestamps))
        return -1;
    part->held = 1;
    Py_ssize_t events = part->timestamps.len / 8;
    if (check_int64_buffer(&part->timestamps, events, "timestamps") < 0 ||
        check_int64_buffer(&part->starts, events, "starts") < 0 ||
        check_int64_buffer(&part->lengths, events, "lengths") < 0)
        return -1;
    const int64_t *starts = part->starts.buf, *lengths = part->lengths.buf;
    const int64_t *times = part->timestamps.buf;
    for (Py_ssize_t i = 0; i < events; i++) {
        if (starts[i] < 0 || lengths[i] < 0 || starts[i] + lengths[i] > part->messages.len) {
            PyErr_Format(PyExc_ValueError, "event %zd lies outside its messages", i);
            return -1;
        }
        if (times[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "timestamps must not be negative");
            return -1;
        }
    }
    return 0;
}

static char *write_event(char *out, int first, int64_t time, const unsigned char *message,
                         size_t length)
{
    if (!first)
        *out++ = ',';
    memcpy(out, EVENT_OPEN, LITERAL_LEN(EVENT_OPEN));
    out = write_decimal(out + LITERAL_LEN(EVENT_OPEN), (uint64_t)time);
    memcpy(out, EVENT_MESSAGE, LITERAL_LEN(EVENT_MESSAGE));
    out = escape_line(message, message + length, out + LITERAL_LEN(EVENT_MESSAGE));
    memcpy(out, EVENT_CLOSE, LITERAL_LEN(EVENT_CLOSE));
    return out + LITERAL_LEN(EVENT_CLOSE);
}

static int frame_part(Body *body, Part *part, int *first)
{
    const unsigned char *messages = part->messages.buf;
    const int64_t *starts = part->starts.buf, *lengths = part->lengths.buf;
    const int64_t *times = part->timestamps.buf;
    Py_ssize_t events = part->timestamps.len / 8;
    for (Py_ssize_t i = 0; i < events; i++) {
        if (body_reserve(body, event_bound((size_t)lengths[i])) < 0)
            return -1;
        char *base = PyBytes_AS_STRING(body->bytes);
        char *out = write_event(base + body->used, *first, times[i], messages + starts[i],
                                (size_t)lengths[i]);
        body->used = (size_t)(out - base);
        *first = 0;
    }
    return 0;
}

static PyObject *frame_events(PyObject *module, PyObject *args)
{
    Py_buffer head;
    PyObject *parts;

    (void)module;
    if (!PyArg_ParseTuple(args, "y*O:frame_events", &head, &parts))
        return NULL;
    PyObject *sequence = PySequence_Fast(parts, "parts must be a sequence");
    if (sequence == NULL) {
        PyBuffer_Release(&head);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    size_t raw_bytes = 0, events = 0;
    Part *held = PyMem_Calloc((size_t)count + 1, sizeof(Part));
    Body body = {NULL, 0, 0};
    if (held == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (hold_part(PySequence_Fast_GET_ITEM(sequence, i), &held[i]) < 0)
            goto done;
        raw_bytes += (size_t)held[i].messages.len;
        events += (size_t)held[i].timestamps.len / 8;
    }
    body.capacity = (size_t)head.len + raw_bytes + raw_bytes / 4 + events * EVENT_FRAME_LEN +
                    LITERAL_LEN(BODY_CLOSE) + VECTOR_BYTES;
    body.bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)body.capacity);
    if (body.bytes == NULL)
        goto done;
    memcpy(PyBytes_AS_STRING(body.bytes), head.buf, (size_t)head.len);
    body.used = (size_t)head.len;
    int first = 1;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (frame_part(&body, &held[i], &first) < 0)
            goto done;
    }
    if (body_reserve(&body, LITERAL_LEN(BODY_CLOSE)) < 0)
        goto done;
    memcpy(PyBytes_AS_STRING(body.bytes) + body.used, BODY_CLOSE, LITERAL_LEN(BODY_CLOSE));
    body.used += LITERAL_LEN(BODY_CLOSE);
    _PyBytes_Resize(&body.bytes, (Py_ssize_t)body.used);

done:
    if (held != NULL) {
        for (Py_ssize_t i = 0; i < count; i++)
            release_part(&held[i]);
        PyMem_Free(held);
    }
    Py_DECREF(sequence);
    PyBuffer_Release(&head);
    if (PyErr_Occurred())
        Py_CLEAR(body.bytes);
    return body.bytes;
}

/* Flow-log timestamps ------------------------------------------------------ */

#define TIMESTAMP_TEXT_LEN 25 /* YYYY-MM-DDTHH:MM:SS.mmmZ" */

static int read_digits(const unsigned char *text, int count, int64_t *value)
{
    int64_t result = 0;
    for (int i = 0; i < count; i++) {
        unsigned digit = (unsigned)text[i] - '0';
        if (digit > 9)
            return 0;
        result = result * 10 + digit;
    }
    *value = result;
    return 1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t year, int64_t month, int64_t day)
{
    year -= month <= 2;
    int64_t era = (year >= 0 ? year : year - 399) / 400;
    int64_t year_of_era = year - era * 400;
    int64_t day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

/* The epoch milliseconds of "YYYY-MM-DDTHH:MM:SS.mmmZ\"" in *epoch_ms; 0 if the text
 * is not such a timestamp. */
static int parse_timestamp(const unsigned char *text, int64_t *epoch_ms)
{
    static const struct {
        int offset, width;
        int64_t low, high;
    } fields[] = {
        {0, 4, 0, 9999}, {5, 2, 1, 12}, {8, 2, 1, 31}, {11, 2, 0, 23},
        {14, 2, 0, 59}, {17, 2, 0, 59}, {20, 3, 0, 999},
    };
    int64_t value[7];
    if (text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' ||
        text[16] != ':' || text[19] != '.' || text[23] != 'Z' || text[24] != '"')
        return 0;
    for (int i = 0; i < 7; i++) {
        if (!read_digits(text + fields[i].offset, fields[i].width, &value[i]) ||
            value[i] < fields[i].low || value[i] > fields[i].high)
            return 0;
    }
    int64_t days = days_from_civil(value[0], value[1], value[2]);
    *epoch_ms = days * 86400000 + ((value[3] * 60 + value[4]) * 60 + value[5]) * 1000 + value[6];
    return 1;
}

static PyObject *line_times(PyObject *module, PyObject *args)
{
    Py_buffer data, head, starts, lengths, times, parsed;
    PyObject *result = NULL;

    (void)module;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*w*:line_times", &data, &head, &starts, &lengths,
                          &times, &parsed))
        return NULL;
    Py_ssize_t lines = starts.len / 8;
    if (check_int64_buffer(&starts, lines, "starts") < 0 ||
        check_int64_buffer(&lengths, lines, "lengths") < 0 ||
        check_int64_buffer(&times, lines, "times") < 0)
        goto done;
    if (parsed.itemsize != 1 || parsed.len != lines) {
        PyErr_Format(PyExc_ValueError, "parsed must hold one byte per line (%zd lines)", lines);
        goto done;
    }
    const unsigned char *in = data.buf;
    const int64_t *line_starts = starts.buf;
    const int64_t *line_lengths = lengths.buf;
    int64_t *line_times = times.buf;
    uint8_t *line_parsed = parsed.buf;
    Py_ssize_t width = head.len + TIMESTAMP_TEXT_LEN;
    for (Py_ssize_t line = 0; line < lines; line++) {
        int64_t start = line_starts[line], time = 0;
        int ok = start >= 0 && line_lengths[line] >= width && start + width <= data.len &&
                 memcmp(in + start, head.buf, (size_t)head.len) == 0 &&
                 parse_timestamp(in + start + head.len, &time);
        line_parsed[line] = (uint8_t)ok;
        line_times[line] = ok ? time : 0;
    }
    result = Py_NewRef(Py_None);

done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&head);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&times);
    PyBuffer_Release(&parsed);
    return result;
}

static PyMethodDef methods[] = {
    {"line_ends", line_ends, METH_O,
     "line_ends(data) -> bytearray\n\n"
     "The offset of every newline in data, as int64s."},
    {"frame_events", frame_events, METH_VARARGS,
     "frame_events(head, parts) -> bytes\n\n"
     "A PutLogEvents request body: head, then each part's events as\n"
     "{\"timestamp\":T,\"message\":\"<escaped>\"}, joined by commas, then ]}.\n"
     "Each part is (messages, starts, lengths, timestamps), the last three\n"
     "int64 buffers with one element per event."},
    {"line_times", line_times, METH_VARARGS,
     "line_times(data, head, starts, lengths, times, parsed)\n\n"
     "For each line that starts with head and a YYYY-MM-DDTHH:MM:SS.mmmZ\"\n"
     "timestamp, its epoch milliseconds in times and 1 in parsed; 0 and 0\n"
     "for the others."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef framing_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "flowlog.cloudwatch._framing",
    .m_doc = "PutLogEvents request bodies from flow-log lines in one pass.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__framing(void)
{
    init_tables();
    return PyModule_Create(&framing_module);
}
