# Evaluation stage (METHOD.md §5-6): exactness checks without tolerances and rank partitioning
# (tests/eval/test_eval.c), on the small pipeline fixture model. The float64 reference
# (tests/reference/eval_ref.py) runs inside the pipeline tests (tests/pipeline/run_small.sh).
add_executable(test_eval ${PROJECT_SOURCE_DIR}/tests/eval/test_eval.c)
target_link_libraries(test_eval PRIVATE resae_lib)
foreach(case identity first redundancy partition)
  resae_add_mpi(eval_${case} TARGET test_eval RANKS 1 2 4 TIMEOUT 120 LABELS eval
    ARGS ${case} ${PROJECT_SOURCE_DIR}/tests/data/pipeline/model ${PROJECT_SOURCE_DIR}/tests/data/pipeline/tokens.h5)
endforeach()

# resae report on a finished small run, and its usage errors
resae_add_cmd(report_help COMMAND $<TARGET_FILE:resae> report --help PASS_REGEX "usage: resae report")
resae_add_cmd(report_missing COMMAND $<TARGET_FILE:resae> report /nonexistent-run-dir WILL_FAIL)

# Benchmark (not a test): tests/bench/eval_bench.sh
add_executable(bench_eval ${PROJECT_SOURCE_DIR}/tests/bench/bench_eval.c)
target_link_libraries(bench_eval PRIVATE resae_lib)
set_target_properties(bench_eval PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/bench)

# SIGKILL in the middle of the evaluation stage, restart, results identical to an uninterrupted run
resae_add_cmd(pipeline_kill_eval COMMAND bash ${PROJECT_SOURCE_DIR}/tests/pipeline/run_small.sh $<TARGET_FILE:resae>
  ${MPIEXEC_EXECUTABLE} ${RESAE_TEST_OUT} ${PROJECT_SOURCE_DIR} killeval
  PASS_REGEX "killed in evaluation and restarted: results identical" TIMEOUT 600 LABELS pipeline)
