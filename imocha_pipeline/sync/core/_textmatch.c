/* The diff engine's two hot loops over text, on every core and without the GIL (see text_native.py).
 *
 * A million record keys are matched, and a million pairs of text fields compared, by reading Python str objects:
 * in Python each read holds the GIL, so the work runs on one core however many the machine has. Here the same
 * reads run on several threads with the GIL released. This is safe because the caller holds a reference to
 * every object read (they sit in numpy object arrays it owns for the whole call) and a str is immutable.
 *
 * The functions take the address of each array's data (a contiguous numpy array: object, int64 or uint8) and
 * its length; text_native.py checks dtypes, contiguity and bounds before calling and keeps the arrays alive.
 *
 *   hash_texts(values, n, out, threads) -> bool
 *       out[i] = a 64-bit hash of the text of values[i]; False (out unspecified) when a value is not an exact,
 *       ready str.
 *   texts_equal(left, left_rows, right, right_rows, n, out, threads) -> None
 *       out[i] = 1 when left[left_rows[i]] and right[right_rows[i]] are equal str, 0 when they are str and
 *       differ, 2 when either is not an exact, ready str (the caller decides those). A rows address of 0
 *       means positions 0..n-1.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define MAX_THREADS 64

/* Whether ``object`` is an exact str whose data can be read without the GIL (PEP 393 "ready"). */
static inline int readable_text(PyObject *object) {
#if PY_VERSION_HEX < 0x030C0000
    return Py_IS_TYPE(object, &PyUnicode_Type) && PyUnicode_IS_READY(object);
#else
    return Py_IS_TYPE(object, &PyUnicode_Type);  /* every str is ready from Python 3.12 on */
#endif
}

static inline uint64_t mix(uint64_t h) {  /* MurmurHash3's 64-bit finaliser */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* Equal strings have equal kind, length and bytes (PEP 393 keeps each string in its narrowest kind). */
static uint64_t text_hash(PyObject *text) {
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const unsigned char *data = (const unsigned char *)PyUnicode_DATA(text);
    size_t size = (size_t)length * (size_t)kind;
    uint64_t h = mix(((uint64_t)size << 2) ^ (uint64_t)kind ^ 0x9e3779b97f4a7c15ULL);
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t word;
        memcpy(&word, data + i, 8);
        h = (h ^ mix(word)) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
    }
    if (i < size) {
        uint64_t word = 0;
        memcpy(&word, data + i, size - i);
        h = (h ^ mix(word ^ 0xa0761d6478bd642fULL)) * 0x9e3779b97f4a7c15ULL;
    }
    return mix(h);
}

typedef struct {
    PyObject *const *values;
    const int64_t *left_rows;
    PyObject *const *right;
    const int64_t *right_rows;
    void *out;
    Py_ssize_t start, stop;
    int failed;
} Chunk;

static void *hash_chunk(void *arg) {
    Chunk *chunk = (Chunk *)arg;
    uint64_t *out = (uint64_t *)chunk->out;
    for (Py_ssize_t i = chunk->start; i < chunk->stop; i++) {
        PyObject *value = chunk->values[i];
        if (!readable_text(value)) {
            chunk->failed = 1;
            return NULL;
        }
        out[i] = text_hash(value);
    }
    return NULL;
}

static void *equal_chunk(void *arg) {
    Chunk *chunk = (Chunk *)arg;
    uint8_t *out = (uint8_t *)chunk->out;
    for (Py_ssize_t i = chunk->start; i < chunk->stop; i++) {
        PyObject *a = chunk->values[chunk->left_rows ? chunk->left_rows[i] : i];
        PyObject *b = chunk->right[chunk->right_rows ? chunk->right_rows[i] : i];
        if (!readable_text(a) || !readable_text(b)) {
            out[i] = 2;
            continue;
        }
        Py_ssize_t length = PyUnicode_GET_LENGTH(a);
        int kind = PyUnicode_KIND(a);
        out[i] = a == b || (length == PyUnicode_GET_LENGTH(b) && kind == PyUnicode_KIND(b)
                            && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)length * (size_t)kind) == 0);
    }
    return NULL;
}

/* Run ``work`` over 0..n split into ``threads`` chunks, the GIL released; returns whether any chunk failed. */
static int run_chunks(Chunk *proto, Py_ssize_t n, int threads, void *(*work)(void *)) {
    Chunk chunks[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS];
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if ((Py_ssize_t)threads > n) threads = n > 0 ? (int)n : 1;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int t = 0; t < threads; t++) {
        chunks[t] = *proto;
        chunks[t].start = n * t / threads;
        chunks[t].stop = n * (t + 1) / threads;
        chunks[t].failed = 0;
        started[t] = t > 0 && pthread_create(&ids[t], NULL, work, &chunks[t]) == 0;
    }
    for (int t = 0; t < threads; t++) {
        if (t == 0 || !started[t]) work(&chunks[t]);  /* this thread's chunk, or one no thread could take */
    }
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(ids[t], NULL);
    }
    Py_END_ALLOW_THREADS
    for (int t = 0; t < threads; t++) failed |= chunks[t].failed;
    return failed;
}

static PyObject *hash_texts(PyObject *self, PyObject *args) {
    unsigned long long values, out;
    Py_ssize_t n;
    int threads;
    if (!PyArg_ParseTuple(args, "KnKi", &values, &n, &out, &threads)) return NULL;
    Chunk proto = {(PyObject *const *)(uintptr_t)values, NULL, NULL, NULL, (void *)(uintptr_t)out, 0, 0, 0};
    return PyBool_FromLong(!run_chunks(&proto, n, threads, hash_chunk));
}

static PyObject *texts_equal(PyObject *self, PyObject *args) {
    unsigned long long left, left_rows, right, right_rows, out;
    Py_ssize_t n;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKKnKi", &left, &left_rows, &right, &right_rows, &n, &out, &threads)) return NULL;
    Chunk proto = {(PyObject *const *)(uintptr_t)left, (const int64_t *)(uintptr_t)left_rows,
                   (PyObject *const *)(uintptr_t)right, (const int64_t *)(uintptr_t)right_rows,
                   (void *)(uintptr_t)out, 0, 0, 0};
    run_chunks(&proto, n, threads, equal_chunk);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"hash_texts", hash_texts, METH_VARARGS, "64-bit hashes of a contiguous object array of str (see the file)."},
    {"texts_equal", texts_equal, METH_VARARGS, "Pairwise equality of str in two object arrays (see the file)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_textmatch", NULL, -1, methods};

PyMODINIT_FUNC PyInit__textmatch(void) { return PyModule_Create(&module); }
