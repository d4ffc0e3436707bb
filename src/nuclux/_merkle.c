/* Native Merkle hashing for nuclux.core.merkle: the same trees, many leaves per call.
 *
 * The tree definitions are those of docs/spec/shares.md (leaf = sha256(0x00 || d),
 * node = sha256(0x01 || l || r), RFC 9162 shape). With 1-KiB leaves the Python loop pays two
 * interpreter calls per leaf and holds the GIL throughout; here one call hashes a whole block
 * with the GIL released, so a node's store thread and a client's encoder run beside the event
 * loop instead of against it. SHA-256 is OpenSSL's (libcrypto), which uses the CPU's SHA
 * extensions where present. nuclux.core.merkle falls back to its Python code when this module
 * is not built; tests/core/test_merkle_native.py checks both agree.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <string.h>

#define HASH 32

static void leaf(const unsigned char *d, size_t n, unsigned char *out) {
    static const unsigned char prefix = 0x00;
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, &prefix, 1);
    SHA256_Update(&c, d, n);
    SHA256_Final(out, &c);
}

/* The low-level context, not the one-shot SHA256(): in OpenSSL 3 that fetches the algorithm
 * through EVP on every call, which tripled the cost of a 65-byte node hash. */
static void node(const unsigned char *l, const unsigned char *r, unsigned char *out) {
    unsigned char buf[1 + 2 * HASH];
    SHA256_CTX c;
    buf[0] = 0x01;
    memcpy(buf + 1, l, HASH);
    memcpy(buf + 1 + HASH, r, HASH);
    SHA256_Init(&c);
    SHA256_Update(&c, buf, sizeof buf);
    SHA256_Final(out, &c);
}

/* Hash the leaves of d (the last may be short) into out; the leaf count. */
static size_t hash_leaves(const unsigned char *d, size_t n, size_t leaf_bytes, unsigned char *out) {
    size_t count = 0;
    for (size_t off = 0; off < n; off += leaf_bytes, count++) {
        size_t len = n - off < leaf_bytes ? n - off : leaf_bytes;
        leaf(d + off, len, out + count * HASH);
    }
    return count;
}

/* Reduce count hashes in h (in place) to the RFC 9162 root, level by level: neighbours pair,
 * a lone last node moves up unchanged. */
static void reduce(unsigned char *h, size_t count) {
    while (count > 1) {
        size_t up = 0;
        for (size_t i = 0; i + 1 < count; i += 2, up++)
            node(h + i * HASH, h + (i + 1) * HASH, h + up * HASH);
        if (count % 2) {
            memmove(h + up * HASH, h + (count - 1) * HASH, HASH);
            up++;
        }
        count = up;
    }
}

static int leaf_size_ok(Py_ssize_t leaf_bytes) {
    if (leaf_bytes < 1 || leaf_bytes > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "leaf_bytes must be 1 .. 2**24");
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(leaf_hashes_doc,
             "leaf_hashes(data, leaf_bytes) -> bytes\n\n"
             "The leaf hashes of data split into leaf_bytes leaves, concatenated (32 bytes "
             "each; none for empty data).");

static PyObject *py_leaf_hashes(PyObject *self, PyObject *args) {
    Py_buffer data;
    Py_ssize_t leaf_bytes;
    if (!PyArg_ParseTuple(args, "y*n", &data, &leaf_bytes))
        return NULL;
    if (!leaf_size_ok(leaf_bytes)) {
        PyBuffer_Release(&data);
        return NULL;
    }
    size_t count = ((size_t)data.len + (size_t)leaf_bytes - 1) / (size_t)leaf_bytes;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * HASH));
    if (out == NULL) {
        PyBuffer_Release(&data);
        return NULL;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    hash_leaves(data.buf, (size_t)data.len, (size_t)leaf_bytes, o);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return out;
}

PyDoc_STRVAR(root_of_bytes_doc,
             "root_of_bytes(data, leaf_bytes) -> bytes\n\n"
             "The Merkle tree hash of data split into leaf_bytes leaves (sha256(b'') for "
             "empty data).");

static PyObject *py_root_of_bytes(PyObject *self, PyObject *args) {
    Py_buffer data;
    Py_ssize_t leaf_bytes;
    unsigned char root[HASH];
    if (!PyArg_ParseTuple(args, "y*n", &data, &leaf_bytes))
        return NULL;
    if (!leaf_size_ok(leaf_bytes)) {
        PyBuffer_Release(&data);
        return NULL;
    }
    size_t count = ((size_t)data.len + (size_t)leaf_bytes - 1) / (size_t)leaf_bytes;
    unsigned char *h = count ? PyMem_RawMalloc(count * HASH) : NULL;
    if (count && h == NULL) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    if (count == 0) {
        SHA256((const unsigned char *)"", 0, root);
    } else {
        hash_leaves(data.buf, (size_t)data.len, (size_t)leaf_bytes, h);
        reduce(h, count);
        memcpy(root, h, HASH);
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(h);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)root, HASH);
}

PyDoc_STRVAR(root_of_hashes_doc,
             "root_of_hashes(hashes) -> bytes\n\n"
             "The Merkle tree hash over entries given as concatenated 32-byte hashes (at "
             "least one).");

static PyObject *py_root_of_hashes(PyObject *self, PyObject *args) {
    Py_buffer data;
    unsigned char root[HASH];
    if (!PyArg_ParseTuple(args, "y*", &data))
        return NULL;
    if (data.len == 0 || data.len % HASH) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "entries are one or more 32-byte hashes");
        return NULL;
    }
    size_t count = (size_t)data.len / HASH;
    unsigned char *h = PyMem_RawMalloc((size_t)data.len);
    if (h == NULL) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    memcpy(h, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    Py_BEGIN_ALLOW_THREADS
    reduce(h, count);
    memcpy(root, h, HASH);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(h);
    return PyBytes_FromStringAndSize((const char *)root, HASH);
}

static PyMethodDef methods[] = {
    {"leaf_hashes", py_leaf_hashes, METH_VARARGS, leaf_hashes_doc},
    {"root_of_bytes", py_root_of_bytes, METH_VARARGS, root_of_bytes_doc},
    {"root_of_hashes", py_root_of_hashes, METH_VARARGS, root_of_hashes_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "nuclux._merkle",
    "Native Merkle hashing (see nuclux.core.merkle).", -1, methods,
};

PyMODINIT_FUNC PyInit__merkle(void) { return PyModule_Create(&module); }
