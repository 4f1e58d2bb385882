/* smkernel agent SUBCOMMAND: argv after "agent". SPDX-License-Identifier: MIT */
#ifndef SMKERNEL_AGENT_CLI_H
#define SMKERNEL_AGENT_CLI_H
int smk_cli_agent(int argc, char **argv);
#endif
