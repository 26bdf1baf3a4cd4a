/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * test-log-capture.h — capture what the code under test logs (stderr) into a
 * temporary file, for tests about log lines.
 */
#ifndef TEST_LOG_CAPTURE_H
#define TEST_LOG_CAPTURE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct log_capture {
    FILE *file;
    int saved_fd;
};

/* From now on stderr goes to a temporary file. */
static inline void log_capture_start(struct log_capture *c)
{
    fflush(stderr);
    c->file = tmpfile();
    cr_assert_not_null(c->file);
    c->saved_fd = dup(2);
    cr_assert_geq(c->saved_fd, 0);
    cr_assert_geq(dup2(fileno(c->file), 2), 0);
}

/* Restore stderr; returns what was logged (malloc'ed, NUL-terminated) and its line count. */
static inline char *log_capture_stop(struct log_capture *c, size_t *lines)
{
    long size;
    char *text;

    fflush(stderr);
    cr_assert_geq(dup2(c->saved_fd, 2), 0);
    close(c->saved_fd);
    size = ftell(c->file);
    cr_assert_geq(size, 0);
    text = calloc(1, (size_t)size + 1);
    cr_assert_not_null(text);
    rewind(c->file);
    cr_assert_eq(fread(text, 1, (size_t)size, c->file), (size_t)size);
    fclose(c->file);
    *lines = 0;
    for (long i = 0; i < size; i++)
        *lines += text[i] == '\n';
    return text;
}

#endif
