#ifndef SMKA_AGENT_VERSION_H
#define SMKA_AGENT_VERSION_H

/* The one place the agent's version lives: the build script, meson.build and
 * the PING reply all read it from here. */
#define SMKA_AGENT_VERSION "0.1.0"

#endif
