#ifndef RESAE_VERSION_H
#define RESAE_VERSION_H
#define RESAE_VERSION "0.1.0"
/* Bumped whenever the layout of the activation or results store changes (docs/store.md). */
#define RESAE_SCHEMA_VERSION 1
#endif
