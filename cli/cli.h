/* cli/cli.h: what the circa command's files share: main.c's helpers for
 * usage errors, configuration and the signing key; the cluster admin
 * commands of cluster.c; and the address file a serving node keeps in its
 * data directory so that those commands can find it. */
#ifndef CIRCA_CLI_CLI_H
#define CIRCA_CLI_CLI_H

#include "core/core.h"
#include "persist/store.h"

#include <stdint.h>

/* main.c */
int cli_usage_error(const char *usage, const char *msg); /* prints; returns exit code 2 */
int cli_load_config(core_config *cfg, const char *file, int use_env); /* 0 or exit code 2 */
int cli_read_signing_key(store *st, uint8_t key[32]);

/* cluster.c: `circa status`, `circa promote`, `circa drain`; exit codes */
int cmd_status(int argc, char **argv);
int cmd_promote(int argc, char **argv);
int cmd_drain(int argc, char **argv);

/* DATA/circa.addr holds the HTTP listen address of the node serving DATA,
 * one line. Written (through a temporary file and a rename) once the node
 * serves, removed when it stops cleanly. 0 or a negative CORE_E* code. */
int cli_addr_write(const char *data, const char *listen);
void cli_addr_remove(const char *data);

#endif
