// The moetier subcommands. Each takes argv with argv[0] = the subcommand name, prints its own
// --help, reports errors as one "error: ..." line on stderr, and returns the exit code.
#pragma once

namespace mt::cli {

int cmd_make_model(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_logits(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_profile(int argc, char** argv);
int cmd_plan(int argc, char** argv);
int cmd_trace(int argc, char** argv);
int cmd_demo(int argc, char** argv);
int cmd_serve(int argc, char** argv);
int cmd_chat(int argc, char** argv);
int cmd_gguf(int argc, char** argv);

}  // namespace mt::cli

// Implemented in tools/moetier/cmd_tokenize.cpp.
int cmd_tokenize(int argc, char** argv);
