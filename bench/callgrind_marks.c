/* Client requests for bench/bench_peer_instructions.py: count one region of a Python program under
 * callgrind. Built once with `gcc -O2 -shared -fPIC` into bench/.build/; needs valgrind's headers. */
#include <valgrind/callgrind.h>

/* Zero the counters and count from here (run with --instr-atstart=no --collect-atstart=no). */
void marks_start(void) {
    CALLGRIND_ZERO_STATS;
    CALLGRIND_START_INSTRUMENTATION;
    CALLGRIND_TOGGLE_COLLECT;
}

/* Stop counting and write the counts to a file of their own, labelled `label`. */
void marks_stop(const char *label) {
    CALLGRIND_TOGGLE_COLLECT;
    CALLGRIND_DUMP_STATS_AT(label);
    CALLGRIND_STOP_INSTRUMENTATION;
}

/* Nonzero under valgrind. */
int marks_running(void) { return RUNNING_ON_VALGRIND; }
