/* Native Merkle hashing for nuclux.core.merkle: the same trees, many leaves per call.
 *
 * The tree definitions are those of docs/spec/shares.md (leaf = sha256(0x00 || d),
 * node = sha256(0x01 || l || r), RFC 9162 shape). With 1-KiB leaves the Python loop pays two
 * interpreter calls per leaf and holds the GIL throughout; here one call hashes a whole block
 * with the GIL released, so a node's store thread and a client's encoder run beside the event
 * loop instead of against it. SHA-256 is OpenSSL's (libcrypto), which uses the CPU's SHA
 * extensions where present. nuclux.core.merkle falls back to its Python code when this module
 * is not built; tests/core/test_merkle_native.py checks both agree.
 *
 * On x86-64 CPUs with the SHA extensions (SHA-NI) the hashes are computed here instead, two
 * messages at a time: a Merkle tree is many short independent messages (a 256-byte leaf is 5
 * SHA-256 blocks, a node 2), and one SHA-NI stream waits on the latency of its round
 * instructions, so two interleaved streams hash nearly twice as fast per core. OpenSSL's
 * context adds a per-message cost besides (init, buffering, final), which matters at 5 blocks.
 * The choice is made once at import (CPUID); both paths give the same bytes (tested).
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HASH 32

/* A message of n bytes prefixed by one byte, hashed on its own: the leaf and node inputs. */
typedef void (*hash_pair_fn)(unsigned char prefix, const unsigned char *d0,
                             const unsigned char *d1, size_t n, unsigned char *o0,
                             unsigned char *o1);
static hash_pair_fn hash_pair = NULL; /* set at import when the CPU has SHA-NI */

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};
static const uint32_t H256[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#define NI __attribute__((target("sha,sse4.1,ssse3")))

/* The 64 rounds of one block for two streams; s0/s1 are each stream's (ABEF, CDGH) state. */
static inline NI void ni_compress2(__m128i s[2][2], const unsigned char *b0,
                                   const unsigned char *b1) {
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i m0[4], m1[4];
    __m128i a0 = s[0][0], c0 = s[0][1], a1 = s[1][0], c1 = s[1][1];
    for (int j = 0; j < 4; j++) {
        m0[j] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b0 + 16 * j)), mask);
        m1[j] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b1 + 16 * j)), mask);
    }
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++) {
        if (j >= 4) {
            /* W[4j..4j+3] from W[4j-16..], W[4j-15], W[4j-7..] and W[4j-2..] */
            __m128i t0 = _mm_add_epi32(_mm_sha256msg1_epu32(m0[j & 3], m0[(j - 3) & 3]),
                                       _mm_alignr_epi8(m0[(j - 1) & 3], m0[(j - 2) & 3], 4));
            __m128i t1 = _mm_add_epi32(_mm_sha256msg1_epu32(m1[j & 3], m1[(j - 3) & 3]),
                                       _mm_alignr_epi8(m1[(j - 1) & 3], m1[(j - 2) & 3], 4));
            m0[j & 3] = _mm_sha256msg2_epu32(t0, m0[(j - 1) & 3]);
            m1[j & 3] = _mm_sha256msg2_epu32(t1, m1[(j - 1) & 3]);
        }
        const __m128i k = _mm_loadu_si128((const __m128i *)(K256 + 4 * j));
        __m128i w0 = _mm_add_epi32(m0[j & 3], k);
        __m128i w1 = _mm_add_epi32(m1[j & 3], k);
        c0 = _mm_sha256rnds2_epu32(c0, a0, w0);
        c1 = _mm_sha256rnds2_epu32(c1, a1, w1);
        a0 = _mm_sha256rnds2_epu32(a0, c0, _mm_shuffle_epi32(w0, 0x0E));
        a1 = _mm_sha256rnds2_epu32(a1, c1, _mm_shuffle_epi32(w1, 0x0E));
    }
    s[0][0] = _mm_add_epi32(s[0][0], a0);
    s[0][1] = _mm_add_epi32(s[0][1], c0);
    s[1][0] = _mm_add_epi32(s[1][0], a1);
    s[1][1] = _mm_add_epi32(s[1][1], c1);
}

/* Block k of prefix || d (n bytes) with SHA-256 padding, total = n + 1 bytes: a pointer into
 * d when the block lies inside it, else built in tmp. */
static inline const unsigned char *block_at(unsigned char tmp[64], unsigned char prefix,
                                            const unsigned char *d, size_t n, size_t k) {
    size_t start = 64 * k; /* message offset of the block; message byte i > 0 is d[i - 1] */
    if (start >= 1 && start + 63 <= n)
        return d + start - 1;
    size_t total = n + 1, end = start + 64;
    memset(tmp, 0, 64);
    size_t lo = start;
    if (start == 0) {
        tmp[0] = prefix;
        lo = 1;
    }
    size_t hi = end < total ? end : total;
    if (hi > lo)
        memcpy(tmp + (lo - start), d + lo - 1, hi - lo);
    if (total >= start && total < end)
        tmp[total - start] = 0x80;
    size_t blocks = (total + 8) / 64 + 1;
    if (k == blocks - 1) {
        uint64_t bits = (uint64_t)total * 8;
        for (int i = 0; i < 8; i++)
            tmp[63 - i] = (unsigned char)(bits >> (8 * i));
    }
    return tmp;
}

static NI void ni_hash_pair(unsigned char prefix, const unsigned char *d0,
                            const unsigned char *d1, size_t n, unsigned char *o0,
                            unsigned char *o1) {
    __m128i s[2][2];
    /* the state as SHA-NI wants it: (A, B, E, F) and (C, D, G, H) */
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)H256), 0xB1);
    __m128i u = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(H256 + 4)), 0x1B);
    s[0][0] = s[1][0] = _mm_alignr_epi8(t, u, 8);
    s[0][1] = s[1][1] = _mm_blend_epi16(u, t, 0xF0);
    unsigned char t0[64], t1[64];
    size_t blocks = (n + 1 + 8) / 64 + 1;
    for (size_t k = 0; k < blocks; k++)
        ni_compress2(s, block_at(t0, prefix, d0, n, k), block_at(t1, prefix, d1, n, k));
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    unsigned char *out[2] = {o0, o1};
    for (int i = 0; i < 2; i++) {
        __m128i x = _mm_shuffle_epi32(s[i][0], 0x1B); /* F E B A */
        __m128i y = _mm_shuffle_epi32(s[i][1], 0xB1); /* D C H G */
        __m128i abcd = _mm_blend_epi16(x, y, 0xF0);
        __m128i efgh = _mm_alignr_epi8(y, x, 8);
        _mm_storeu_si128((__m128i *)out[i], _mm_shuffle_epi8(abcd, bswap));
        _mm_storeu_si128((__m128i *)(out[i] + 16), _mm_shuffle_epi8(efgh, bswap));
    }
}

static int cpu_has_shani(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b & (1u << 29)) != 0; /* CPUID.(EAX=7,ECX=0):EBX.SHA[bit 29] */
}
#endif

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
    size_t count = 0, off = 0;
    if (hash_pair != NULL) {
        for (; off + 2 * leaf_bytes <= n; off += 2 * leaf_bytes, count += 2)
            hash_pair(0x00, d + off, d + off + leaf_bytes, leaf_bytes, out + count * HASH,
                      out + (count + 1) * HASH);
    }
    for (; off < n; off += leaf_bytes, count++) {
        size_t len = n - off < leaf_bytes ? n - off : leaf_bytes;
        leaf(d + off, len, out + count * HASH);
    }
    return count;
}

/* Reduce count hashes in h (in place) to the RFC 9162 root, level by level: neighbours pair,
 * a lone last node moves up unchanged. */
static void reduce(unsigned char *h, size_t count) {
    while (count > 1) {
        size_t up = 0, i = 0;
        /* two nodes at a time; in place is safe: outputs are written after their inputs are
         * read, and node up's output lies at or before its inputs */
        if (hash_pair != NULL) {
            for (; i + 3 < count; i += 4, up += 2)
                hash_pair(0x01, h + i * HASH, h + (i + 2) * HASH, 2 * HASH, h + up * HASH,
                          h + (up + 1) * HASH);
        }
        for (; i + 1 < count; i += 2, up++)
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

PyMODINIT_FUNC PyInit__merkle(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (cpu_has_shani() && getenv("NUCLUX_MERKLE_NO_SHANI") == NULL)
        hash_pair = ni_hash_pair;
#endif
    return PyModule_Create(&module);
}
