/* hostile: a test job that misbehaves on purpose, one way per MODE, so the Nuclux sandbox
 * tests can show each limit holding. `hostile MODE [ARG]`:
 *
 *   hostpath       try to read host files by absolute and ../ paths; print what happened
 *   symlink        leave /out/evil -> ../../../../etc/passwd next to a regular output,
 *                  try an absolute link, and try to read through the relative one
 *   outlink        replace /out with a symbolic link to /in
 *   sleep SECONDS  block in one WASI poll_oneoff (sleep), which epoch deadlines cannot cut
 *   stdout         write to stdout forever
 *   write NAME N   write N bytes ('x') to /out/NAME, then exit
 *   disk           append to /out/big forever (until the sandbox stops it or a write fails)
 *   files          create empty files forever
 *   membomb        malloc and touch 1 MiB blocks until malloc fails, then exit 3
 *   recurse        recurse without bound (stack overflow)
 *   entropy        print 16 bytes of random_get and three clock readings
 *   float          print the bits of NaN-producing arithmetic
 *   env            print argc, argv and the number of environment variables
 *
 * Built by scripts/build-examples; not an example to imitate. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static char *volatile sink;

static void try_read(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("%s: refused (%s)\n", path, strerror(errno));
        return;
    }
    char line[128] = "";
    if (!fgets(line, sizeof line, f)) line[0] = 0;
    printf("%s: READ %s\n", path, line);
    fclose(f);
}

#pragma clang diagnostic ignored "-Winfinite-recursion"
static int recurse(volatile int depth) {
    volatile char pad[256];
    pad[0] = (char)depth;
    return recurse(depth + 1) + pad[0];
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "hostpath")) {
        const char *paths[] = {"/etc/passwd", "../etc/passwd", "../../../../etc/passwd",
                               "/../etc/passwd", "/in/../../etc/passwd", "/proc/self/environ"};
        for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) try_read(paths[i]);
        return 0;
    }
    if (!strcmp(mode, "symlink")) {
        FILE *f = fopen("/out/ok.txt", "w");
        if (f) fputs("fine\n", f), fclose(f);
        if (symlink("../../../../etc/passwd", "/out/evil")) perror("symlink");
        if (symlink("/etc/passwd", "/out/absolute") == 0) puts("absolute link made");
        try_read("/out/evil"); /* the link exists, but resolving it leaves the sandbox */
        return 0;
    }
    if (!strcmp(mode, "outlink")) {
        if (rmdir("/out") || symlink("in", "/out")) perror("outlink");
        return 0;
    }
    if (!strcmp(mode, "sleep")) {
        sleep(argc > 2 ? (unsigned)atoi(argv[2]) : 3600);
        puts("woke up");
        return 0;
    }
    if (!strcmp(mode, "stdout")) {
        for (;;) fputs("all work and no play makes a dull job\n", stdout);
    }
    if (!strcmp(mode, "write") && argc == 4) {
        char path[300];
        snprintf(path, sizeof path, "/out/%s", argv[2]);
        FILE *f = fopen(path, "w");
        if (!f) return perror(path), 2;
        for (long n = atol(argv[3]); n > 0; n--) fputc('x', f);
        return fclose(f) ? 2 : 0;
    }
    if (!strcmp(mode, "disk")) {
        static char block[1 << 16];
        memset(block, 'x', sizeof block);
        FILE *f = fopen("/out/big", "w");
        if (!f) return perror("/out/big"), 2;
        for (unsigned long long n = 0;; n++) {
            if (fwrite(block, 1, sizeof block, f) != sizeof block || fflush(f)) {
                fprintf(stderr, "write failed after %llu KiB: %s\n", n * 64, strerror(errno));
                return 4;
            }
        }
    }
    if (!strcmp(mode, "files")) {
        char name[64];
        for (unsigned long n = 0;; n++) {
            snprintf(name, sizeof name, "/out/f%lu", n);
            int fd = open(name, O_CREAT | O_WRONLY, 0600);
            if (fd < 0) return fprintf(stderr, "create failed: %s\n", strerror(errno)), 4;
            close(fd);
        }
    }
    if (!strcmp(mode, "membomb")) {
        for (unsigned long mib = 0;; mib++) {
            char *p = malloc(1 << 20);
            if (!p) {
                fprintf(stderr, "malloc failed after %lu MiB\n", mib);
                return 3;
            }
            memset(p, (int)mib, 1 << 20);
            sink = p; /* keep the block observable, or the compiler elides it */
        }
    }
    if (!strcmp(mode, "recurse")) return recurse(0);
    if (!strcmp(mode, "entropy")) {
        unsigned char r[16];
        if (getentropy(r, sizeof r)) return perror("getentropy"), 2;
        for (int i = 0; i < 16; i++) printf("%02x", r[i]);
        struct timespec a, b, c;
        clock_gettime(CLOCK_REALTIME, &a);
        clock_gettime(CLOCK_MONOTONIC, &b);
        clock_gettime(CLOCK_REALTIME, &c);
        printf(" %lld.%09ld %lld.%09ld %lld.%09ld\n", (long long)a.tv_sec, a.tv_nsec,
               (long long)b.tv_sec, b.tv_nsec, (long long)c.tv_sec, c.tv_nsec);
        return 0;
    }
    if (!strcmp(mode, "float")) {
        volatile double zero = 0.0, inf = 1.0 / zero;
        volatile float fz = 0.0f;
        double values[] = {zero / zero, inf - inf, -(zero / zero), inf * zero};
        float fv = fz / fz;
        for (size_t i = 0; i < 4; i++) {
            uint64_t bits;
            memcpy(&bits, &values[i], 8);
            printf("%016" PRIx64 " ", bits);
        }
        uint32_t fbits;
        memcpy(&fbits, &fv, 4);
        printf("%08" PRIx32 "\n", fbits);
        return 0;
    }
    if (!strcmp(mode, "env")) {
        int n = 0;
        while (environ && environ[n]) n++;
        printf("argc=%d env=%d", argc, n);
        for (int i = 0; i < argc; i++) printf(" [%s]", argv[i]);
        printf("\n");
        return 0;
    }
    fprintf(stderr, "unknown mode '%s'\n", mode);
    return 2;
}
