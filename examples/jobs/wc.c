/* wc: count lines, words and bytes of each file named on the command line (default:
 * every file in /in, in name order) and of all together, as `wc` does; the table also
 * goes to /out/wc.txt.
 *
 * A Nuclux example job: plain C and WASI preview 1, built by scripts/build-examples. */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned long long lines, words, bytes;
} counts;

static int count_file(const char *path, counts *c) {
    static unsigned char buf[1 << 16];
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    int in_word = 0;
    size_t n;
    memset(c, 0, sizeof *c);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        c->bytes += n;
        for (size_t i = 0; i < n; i++) {
            if (buf[i] == '\n') c->lines++;
            if (isspace(buf[i])) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                c->words++;
            }
        }
    }
    fclose(f);
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    char *paths[256];
    int count = 0;
    if (argc > 1) {
        for (int i = 1; i < argc && count < 256; i++) paths[count++] = argv[i];
    } else {
        DIR *dir = opendir("/in");
        if (!dir) {
            perror("/in");
            return 2;
        }
        struct dirent *e;
        while ((e = readdir(dir)) && count < 256) {
            if (e->d_name[0] == '.') continue;
            paths[count] = malloc(strlen(e->d_name) + 5);
            sprintf(paths[count++], "/in/%s", e->d_name);
        }
        closedir(dir);
        qsort(paths, count, sizeof paths[0], by_name);
    }
    FILE *report = fopen("/out/wc.txt", "w");
    if (!report) {
        perror("/out/wc.txt");
        return 2;
    }
    counts total = {0, 0, 0}, c;
    int failures = 0;
    for (int i = 0; i < count; i++) {
        if (count_file(paths[i], &c)) {
            failures++;
            continue;
        }
        total.lines += c.lines, total.words += c.words, total.bytes += c.bytes;
        printf("%7llu %7llu %7llu %s\n", c.lines, c.words, c.bytes, paths[i]);
        fprintf(report, "%7llu %7llu %7llu %s\n", c.lines, c.words, c.bytes, paths[i]);
    }
    if (count > 1) {
        printf("%7llu %7llu %7llu total\n", total.lines, total.words, total.bytes);
        fprintf(report, "%7llu %7llu %7llu total\n", total.lines, total.words, total.bytes);
    }
    fclose(report);
    return failures ? 1 : 0;
}
