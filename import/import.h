/*
 * import — catalog files, parsed into rows for CMD_IMPORT.
 *
 * Three formats, detected from the content (overridable):
 *   IMP_LIBRARY  the Library module's content file: a JSON array of
 *                {"contentId": UUID, "title": ..., "contentType": TYPE}
 *   IMP_JSONL    JSON Lines: one circa resource object per line
 *                ({id, title, type, copies, premium, authors, tags}; the
 *                read-only fields of a resource view are accepted and ignored)
 *   IMP_CSV      CSV (RFC 4180) with a header row naming those columns
 *
 * These are parsers of untrusted input: the whole file is in memory (its
 * size is limited by the caller), every row is checked against the field
 * limits of core.h, and a bad row is rejected with its line number and a
 * reason while the rows around it go on. Only a file whose structure is
 * broken (a JSON array that does not parse, a CSV header that is not
 * ours, UTF-16) is refused as a whole. An id seen earlier in the same file
 * is a rejected row ("duplicate id").
 */
#ifndef CIRCA_IMPORT_H
#define CIRCA_IMPORT_H

#include "core/core.h"

#include <stddef.h>
#include <stdint.h>

enum imp_format { IMP_AUTO = 0, IMP_LIBRARY, IMP_JSONL, IMP_CSV };

#define IMP_MAX_ROW (64 * 1024) /* bytes of one array element, line or CSV record */

/* imp_next() results besides 1 (a row) and 0 (the end) */
#define IMP_REJECT 2

/* "library", "jsonl", "csv" */
const char *imp_format_name(int format);
/* "auto", "library" (or "json"), "jsonl" (or "ndjson"), "csv"; -1 when unknown */
int imp_format_parse(const char *s);
/* the format of a file from its first bytes (after a UTF-8 BOM and white
 * space): '[' library, '{' jsonl, anything else csv */
int imp_detect(const uint8_t *data, size_t len);

typedef struct imp_parser imp_parser;

/* A parser over data (which must outlive it). format IMP_AUTO detects.
 * 0, or CORE_EINVAL with the reason the file is refused in err, or
 * CORE_ENOMEM. */
int imp_open(const uint8_t *data, size_t len, int format, imp_parser **out, char *err,
             size_t errlen);
/* the format in use (after detection) */
int imp_format(const imp_parser *p);
/* The next row:
 *   1           row is filled; its strings stay valid until the next call
 *   0           the end of the file
 *   IMP_REJECT  a rejected row: row->line and reason are set; call again
 *   CORE_EINVAL the file's structure broke (reason says where); stop
 *   CORE_ENOMEM */
int imp_next(imp_parser *p, cmd_row *row, char *reason, size_t reasonlen);
/* bytes of the file consumed so far (for progress) */
size_t imp_offset(const imp_parser *p);
void imp_close(imp_parser *p);

#endif
